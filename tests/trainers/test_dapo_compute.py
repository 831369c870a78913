"""DAPO on real-model terms (issue 10): token-budget micro-batches that leave the actor's and the
critic's loss and gradients unchanged, gradient checkpointing, states rendered with the chat template,
and a short bf16 run whose checkpoint is written in bf16 with its fp32 master weights beside it."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from trainers.base import MemorySink, get_spec
from trainers.common.checkpoints import OPTIMIZER_FILE, STATE_FILE
from trainers.common.models import ValueModel, load_policy
from trainers.common.precision import enable_gradient_checkpointing
from trainers.common.rollout_batch import build_batch
from trainers.common.tiny import build_tiny_model
from trainers.common.token_batching import split_by_token_budget
from trainers.dapo.actor import actor_backward, dapo_loss
from trainers.dapo.critic import PrefixSequence, critic_backward, critic_loss, micro_batches, prefix_logits
from trainers.dapo.encoding import StateEncoder
from trainers.dapo.train import Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

REL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=3, hidden=32, layers=2)
    return directory


def grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        scale = max(float(y.abs().max()), 1e-12)
        assert float((x - y).abs().max()) <= REL * scale


def random_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(4, 90) for _ in range(n)]


# --- actor -------------------------------------------------------------------------------------


def actor_case(seed: int = 0, states: int = 6, k: int = 3):
    rng = random.Random(seed)
    contexts = [random_ids(rng, rng.randint(5, 14)) for _ in range(states)]
    actions = [[random_ids(rng, rng.randint(1, 7)) for _ in range(k)] for _ in range(states)]
    gen = torch.Generator().manual_seed(seed)
    ref = -torch.rand(states, k, generator=gen) * 10
    adv = torch.rand(states, k, generator=gen) * 2 - 1
    return contexts, actions, ref, adv


def full_logits_loss(model, contexts, actions, ref, adv, pad_id, beta, center):
    """The reference: full (B, L, V) logits of one batch, log_softmax, summed over each action."""
    flat = [(c, a) for c, group in zip(contexts, actions, strict=True) for a in group]
    batch = build_batch(flat, pad_id)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, batch.targets[..., None]).squeeze(-1)
    summed = (logp * batch.response_mask).sum(-1).view(ref.shape)
    return dapo_loss(summed, ref, adv, beta=beta, center=center).loss


@pytest.mark.parametrize("center", [True, False])
def test_actor_micro_batches_equal_the_unsplit_update(tiny, center):
    model, tok = load_policy(tiny)
    model.train()
    contexts, actions, ref, adv = actor_case()
    lengths = [3 * max(len(c) + len(a) for a in group) for c, group in zip(contexts, actions, strict=True)]
    assert len(split_by_token_budget(lengths, 3 * 21)) >= 3  # the small budget really splits
    reference = full_logits_loss(model, contexts, actions, ref, adv, tok.pad_token_id, 0.5, center)
    reference.backward()
    expected = grads(model)
    results = {}
    # one micro-batch, and a budget of about one state (its K rows) per micro-batch
    for budget in (10**6, 3 * 21):
        model.zero_grad(set_to_none=True)
        out, entropy = actor_backward(
            model, contexts, actions, ref, adv, tok.pad_token_id, beta=0.5, center=center, token_budget=budget
        )
        results[budget] = out
        assert float(out.loss) == pytest.approx(reference.item(), rel=REL)
        assert_close(grads(model), expected)
        assert 0 < entropy < math.log(len(tok))
    split, whole = results[3 * 21], results[10**6]
    assert split.abs_log_ratio == pytest.approx(whole.abs_log_ratio, rel=REL)
    assert split.corr_log_ratio_adv == pytest.approx(whole.corr_log_ratio_adv, rel=1e-4)


# --- critic ------------------------------------------------------------------------------------


def critic_case(seed: int = 1, n: int = 7) -> list[PrefixSequence]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = random_ids(rng, rng.randint(6, 20))
        ends = sorted(rng.sample(range(2, len(ids)), rng.randint(1, 4)))
        out.append(PrefixSequence(ids, ends, [rng.random() for _ in ends], rng.random() < 0.5))
    return out


@pytest.mark.parametrize("kind", ["bce", "mse"])
def test_critic_micro_batches_equal_the_unsplit_update(tiny, kind):
    backbone = load_policy(tiny)[0].base_model
    critic = ValueModel(backbone)
    critic.train()
    batch = critic_case()
    labels = torch.tensor([v for s in batch for v in s.labels])
    reference = critic_loss(prefix_logits(critic, batch, 0), labels, kind)  # a mean over all prefixes
    reference.backward()
    expected = grads(critic)
    assert len(micro_batches(batch, 40)) >= 3
    for budget in (10**6, 40):
        critic.zero_grad(set_to_none=True)
        loss = critic_backward(critic, batch, 0, loss=kind, token_budget=budget)
        assert loss == pytest.approx(reference.item(), rel=REL)
        assert_close(grads(critic), expected)


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    model, tok = load_policy(tiny)
    model.train()
    contexts, actions, ref, adv = actor_case(seed=5)
    actor_backward(
        model, contexts, actions, ref, adv, tok.pad_token_id, beta=1.0, center=True, token_budget=64
    )
    expected = grads(model)
    critic = ValueModel(load_policy(tiny)[0].base_model)
    critic.train()
    critic_backward(critic, critic_case(), 0, loss="bce", token_budget=64)
    expected_critic = grads(critic)

    enable_gradient_checkpointing(model)
    enable_gradient_checkpointing(critic)
    assert model.is_gradient_checkpointing and critic.backbone.is_gradient_checkpointing
    model.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    actor_backward(
        model, contexts, actions, ref, adv, tok.pad_token_id, beta=1.0, center=True, token_budget=64
    )
    critic_backward(critic, critic_case(), 0, loss="bce", token_budget=64)
    assert_close(grads(model), expected)
    assert_close(grads(critic), expected_critic)


# --- chat template -----------------------------------------------------------------------------


def test_states_are_the_rendered_prompt_then_the_steps_with_one_bos(tiny):
    _, tok = load_policy(tiny)
    encoder = StateEncoder(tok, "auto")
    rendered = tok.encode("<bos>user: 17+25+9=\nassistant: ", add_special_tokens=False)
    assert encoder.prompt("17+25+9=") == rendered
    state = encoder.state("17+25+9=", ["17+25=42\n", "42+9=51\n"])
    assert state == rendered + tok.encode("17+25=42\n42+9=51\n", add_special_tokens=False)
    assert state.count(tok.bos_token_id) == 1 and state[0] == tok.bos_token_id
    assert StateEncoder(tok, "none").prompt("17+25+9=") == tok.encode("17+25+9=")


class Recording:
    """A rollout engine that records what the pipeline hands the real one."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, []

    def generate(self, prompts, **kwargs):
        self.prompts += list(prompts)
        return self.engine.generate(prompts, **kwargs)

    def sync_weights(self, model):
        self.engine.sync_weights(model)


SHORT = {
    "generated_train": 20,
    "generated_eval": 3,
    "steps": {"mode": "delimiter", "delimiter": "\n", "max_steps": 3},
    "generate": {"prompts": 4, "solutions_per_prompt": 2, "mc_rollouts": 2, "max_new_tokens": 10},
    "critic": {"epochs": 1, "batch_size": 4, "max_length": 48, "val_fraction": 0.34, "eval_every": 0},
    "actor": {"candidates": 2, "epochs": 1, "states": 6, "states_per_batch": 3, "max_step_tokens": 5},
    "eval": {"k": 1, "temperature": 0.0, "max_new_tokens": 10},
    "reward_processes": 1,
    "micro_batch_tokens": 64,
}


def run_stages(pipeline: Pipeline) -> None:
    """One iteration, as trainers.dapo.train.train runs it."""
    rows = pipeline.generate(0)
    pipeline.log(0.0, pipeline.evaluate())
    pipeline.advance()
    pipeline.train_critic(rows)
    pipeline.advance()
    pipeline.train_actor(rows)
    pipeline.checkpoint(0, complete=True)


def test_a_short_bf16_run_renders_every_prompt_and_saves_bf16_with_master_weights(tiny, tmp_path):
    spec = get_spec("dapo")
    cfg = spec.validate(
        {**SHORT, "model_path": str(tiny), "dtype": "bfloat16", "gradient_checkpointing": True}
    )
    sink = MemorySink(workdir=tmp_path / "run")
    (tmp_path / "run").mkdir()
    pipeline = Pipeline(cfg, sink)
    try:
        assert pipeline.precision.compute_dtype == torch.bfloat16
        assert next(pipeline.policy.parameters()).dtype == torch.float32  # fp32 master weights
        pipeline.engine = Recording(pipeline.engine)
        pipeline.step_engine = Recording(pipeline.step_engine)
        run_stages(pipeline)
    finally:
        pipeline.pool.close()
    for key in ("critic/loss", "actor/loss", "policy/entropy", "actor/grad_norm"):
        assert sink.series(key) and all(math.isfinite(v) for v in sink.series(key)), key
    assert "memory/peak_gb" not in sink.metrics  # CUDA only
    assert next(pipeline.critic.backbone.parameters()).dtype == torch.bfloat16  # frozen in compute dtype

    # every prompt a model was given: token ids starting with a rendered problem prompt, one BOS
    tok = pipeline.tokenizer
    bos = tok.bos_token_id
    head = tok.encode("<bos>user: ", add_special_tokens=False)
    given = pipeline.engine.prompts + pipeline.step_engine.prompts
    assert pipeline.step_engine.prompts and len(given) > len(pipeline.step_engine.prompts)
    for ids in given:
        assert isinstance(ids, list) and ids[: len(head)] == head and ids.count(bos) == 1
        assert "\nassistant: " in tok.decode(ids)

    # the sample record (issue 14): one group per state, its K candidates as members
    candidates = [(st, s) for st, s in sink.samples if s.get("phase") == "train" and "group_index" in s]
    groups: dict[tuple[int, int], list[dict]] = {}
    for st, s in candidates:
        groups.setdefault((st, s["group_index"]), []).append(s)
    states = int(next(iter(sink.metrics["actor/states"].values())))
    assert len(groups) == states and len({st for st, _ in groups}) == 1  # every state, at the actor stage
    assert sorted(g for _, g in groups) == list(range(states))
    for members in groups.values():
        assert [m["member_index"] for m in members] == [0, 1]
        assert len({(m["prompt"], m["state"]) for m in members}) == 1
        for m in members:
            assert m["completion"] == m["state"] + m["step_text"]
            assert m["advantage"] == pytest.approx(m["reward"] - m["value_state"], abs=1e-5)
            assert m["finish_reason"] in ("stop", "length") and ("verdict" in m) == m["terminal"]
        qs = [m["reward"] for m in members]
        flat = max(qs) - min(qs) <= 1e-9  # centred targets all 0: the state adds nothing to the loss
        assert {m["group_status"] for m in members} == {"kept" if not flat else members[0]["group_status"]}
        assert flat or members[0]["group_status"] == "kept"
    # the first state's candidates carry per-token arrays over the candidate's part of the completion
    tokenized = [(g, s) for (_, g), members in groups.items() for s in members if "tokens" in s]
    assert {g for g, _ in tokenized} == {0} and len(tokenized) == 2
    for _, s in tokenized:
        t = s["tokens"]
        assert len(t["offsets"]) == len(t["logprobs"]) == len(t["entropies"]) == s["length"]
        assert t["offsets"][0] == len(s["state"]) and t["offsets"][-1] <= len(s["completion"])
        assert all(a <= b for a, b in zip(t["offsets"], t["offsets"][1:], strict=False))
        assert all(lp <= 0 for lp in t["logprobs"]) and all(e >= 0 for e in t["entropies"])
    # the evaluations' rollouts: the same problems before training and at the end
    evals = [(st, s) for st, s in sink.samples if s.get("phase") == "eval"]
    steps = sorted({st for st, _ in evals})
    assert len(steps) == 2
    assert [s["prompt"] for st, s in evals if st == steps[0]] == [
        s["prompt"] for st, s in evals if st == steps[1]
    ]
    assert [s["group_index"] for st, s in evals if st == steps[0]] == [0, 1, 2]

    step, directory, _ = sink.checkpoints[-1]
    assert {t.dtype for t in load_file(str(directory / "model.safetensors")).values()} == {torch.bfloat16}
    assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"
    state = json.loads((directory / STATE_FILE).read_text())
    assert state == {"kind": "dapo", "iteration": 0, "complete": True, "step": step}
    saved = torch.load(directory / OPTIMIZER_FILE, weights_only=True)
    assert {"optimizer", "master_weights"} <= set(saved)

    # save_optimizer off: the model and the trainer state only
    pipeline.cfg = cfg.model_copy(update={"save_optimizer": False})
    pipeline.step += 1
    pipeline.checkpoint(0, complete=True)
    bare = sink.checkpoints[-1][1]
    assert not (bare / OPTIMIZER_FILE).exists() and (bare / STATE_FILE).is_file()

    # a resume starts from the fp32 master weights, not their bf16 rounding
    resumed = Pipeline(cfg, MemorySink(workdir=tmp_path / "resume", resume_from=directory))
    resumed.pool.close()
    assert resumed.first_iteration == 1 and resumed.step == step + 1
    for a, b in zip(resumed.policy.parameters(), pipeline.policy.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)
