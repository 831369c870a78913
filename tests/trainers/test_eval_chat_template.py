"""On-demand evaluation renders prompts with the chat template (auto by default), as SFT and the RL
rollouts do; an engine that already renders keeps its mode; a template that cannot render is an
error naming chat_template."""

from __future__ import annotations

import json

import pytest

from trainers.common import chat
from trainers.common.models import load_policy
from trainers.common.rewards import RewardPool
from trainers.common.rollout import ChatTemplateEngine, TorchSampler
from trainers.common.tiny import build_tiny_model
from trainers.eval.core import Problem, evaluate
from trainers.eval.run import evaluate_checkpoint, main

pytestmark = pytest.mark.usefixtures("one_thread")


class Recording:
    """The real sampler, remembering the prompts it was handed."""

    def __init__(self, engine):
        self.engine, self.tokenizer, self.seen = engine, engine.tokenizer, []

    def generate(self, prompts, **kwargs):
        self.seen.extend(prompts)
        return self.engine.generate(prompts, **kwargs)

    def sync_weights(self, model):
        self.engine.sync_weights(model)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("p"), seed=0, hidden=32, layers=1, heads=2)


PROBLEMS = [Problem("1+2=", "math", "3"), Problem("4+4=", "math", "8")]


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_prompts_reach_the_engine_rendered(policy, mode):
    model, tok = load_policy(policy)
    engine = Recording(TorchSampler(model, tok))
    with RewardPool(1) as pool:
        metrics, protocol = evaluate(
            engine, PROBLEMS, pool, k=2, temperature=0.6, max_new_tokens=4, chat_template=mode
        )
    assert engine.seen == [chat.prompt_ids(tok, p.prompt, mode) for p in PROBLEMS]
    assert protocol["chat_template"] == mode and 0 <= metrics["avg@2"] <= 1


def test_an_engine_that_renders_is_not_rendered_twice(policy):
    model, tok = load_policy(policy)
    recording = Recording(TorchSampler(model, tok))
    with RewardPool(1) as pool:
        _, protocol = evaluate(
            ChatTemplateEngine(recording, tok, "none"), PROBLEMS, pool, k=1, temperature=0.0, max_new_tokens=4
        )
    assert recording.seen == [chat.prompt_ids(tok, p.prompt, "none") for p in PROBLEMS]
    assert protocol["chat_template"] == "none"


def test_evaluate_checkpoint_records_template_and_dtype_and_refuses_a_broken_template(
    policy, tmp_path, capsys
):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        "".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(3))
    )
    metrics, protocol = evaluate_checkpoint(policy, bench, k=2, max_new_tokens=4, processes=1)
    assert (
        protocol["chat_template"] == "auto" and protocol["dtype"] == "float32" and protocol["problems"] == 3
    )
    custom = "{% for m in messages %}Q: {{ m['content'] }}{% endfor %}A:"
    _, protocol = evaluate_checkpoint(policy, bench, k=1, max_new_tokens=2, processes=1, chat_template=custom)
    assert protocol["chat_template"] == "custom"
    broken = "{% for m in messages %}{{ m['content'] | no_such_filter }}{% endfor %}"
    code = main(["--checkpoint", str(policy), "--benchmark", str(bench), "--k", "1", "--max-new-tokens", "2",
                 "--chat-template", broken])  # fmt: skip
    assert code == 2 and "--chat-template" in capsys.readouterr().err
