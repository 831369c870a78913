"""TRL's GRPOTrainer logging into orlab through orlab_client.integrations.trl: a tiny random Qwen2
policy with the char tokenizer (trainers/common/tiny.py) trained on the CPU for 3 steps (2 prompts x
2 generations, completions of at most 8 tokens, two reward functions) against the real server
(gunicorn on the test database). The run's metrics arrive under transformers' wandb names, and every
completion arrives as a sample with its prompt group, per-function rewards, advantage, length and
truncated flag, agreeing with TRL's own per-step aggregates."""

import math
from collections import defaultdict

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

import orlab_client
from orlab_client.integrations.trl import OrlabCallback, add_orlab_callback
from tests.client.test_client import server, token  # noqa: F401 (fixtures)
from trainers.common.tiny import build_char_tokenizer, tiny_config
from webapp.runs.metric_store import series_read
from webapp.runs.models import Run, Sample
from webapp.runs.samples import prompt_text

MAX_COMPLETION = 8
PROMPTS = ["1+1=", "2+3="]


def short(completions, **kwargs):
    return [-len(c) / MAX_COMPLETION for c in completions]


def has_digit(completions, **kwargs):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def tiny_policy(tokenizer):
    config = tiny_config(
        len(tokenizer), hidden=32, layers=1, heads=2,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # a random policy that stops at EOS now and then, so both kinds of ending occur
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= 15.0
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_grpo_trainer_logs_metrics_and_grouped_completions(server, token, project, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ORLAB_URL", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("ORLAB_TOKEN", token)
    monkeypatch.setenv("ORLAB_PROJECT", str(project.id))
    monkeypatch.setenv("ORLAB_SPOOL_DIR", str(tmp_path / "spool"))
    tokenizer = build_char_tokenizer()
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=MAX_COMPLETION, max_steps=3, logging_steps=1, learning_rate=1e-3,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
        # no <pad>/<bos>/<unk> inside a completion: its decoded text then re-tokenizes exactly
        generation_kwargs={"suppress_tokens": [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]},
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=tiny_policy(tokenizer), reward_funcs=[short, has_digit], args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer,
    )  # fmt: skip
    with orlab_client.init(name="trl-grpo", flush_interval=0.1) as run:
        callback = add_orlab_callback(trainer, run)
        assert isinstance(callback, OrlabCallback) and callback in trainer.callback_handler.callbacks
        trainer.train()
    assert Run.objects.get(pk=run.id).status == "succeeded"

    # metrics: TRL's log dict at each global step, under train/...
    keys = ["train/loss", "train/reward", "train/rewards/short/mean", "train/rewards/has_digit/mean",
            "train/completions/mean_length", "train/completions/clipped_ratio"]  # fmt: skip
    series = series_read([run.id], keys)[run.id]
    assert set(series) == set(keys)
    assert series["train/reward"]["steps"].tolist() == [1, 2, 3]
    metric = {k: dict(zip(s["steps"].tolist(), s["values"].tolist(), strict=True)) for k, s in series.items()}

    # samples: one per completion, each generation batch once (4 per step), grouped by prompt
    samples = list(Sample.objects.filter(run_id=run.id).order_by("step", "id"))
    by_step = defaultdict(list)
    for s in samples:
        by_step[s.step].append(s)
    assert sorted(by_step) == [1, 2, 3] and all(len(v) == 4 for v in by_step.values())
    endings = set()
    for step, rows in by_step.items():
        groups = defaultdict(list)
        for s in rows:
            assert s.extra["source"] == "trl" and s.phase == "train"
            assert set(s.rewards) == {"short", "has_digit"}
            rewards = s.rewards
            assert rewards["short"] == pytest.approx(-len(s.completion) / MAX_COMPLETION)
            assert rewards["has_digit"] == float(any(ch.isdigit() for ch in s.completion))
            assert s.reward == pytest.approx(rewards["short"] + rewards["has_digit"])
            assert s.advantage is not None and math.isfinite(s.advantage)
            # the char tokenizer: one token a character; a completion that stopped counts its EOS
            assert s.truncated == (len(s.completion) >= MAX_COMPLETION)
            assert s.length == len(s.completion) + (0 if s.truncated else 1)
            assert s.finish_reason == ("length" if s.truncated else "stop")
            endings.add(s.truncated)
            groups[s.group_index].append(s)
        assert sorted(groups) == [0, 1]
        assert sorted(prompt_text(g[0]) for g in groups.values()) == PROMPTS
        for group in groups.values():
            assert len({s.prompt_ref_id for s in group}) == 1
            assert sorted(s.member_index for s in group) == [0, 1]
            # GRPO's advantage: the reward minus its group's mean (scaled by the group's std)
            assert sum(s.advantage for s in group) == pytest.approx(0.0, abs=1e-4)
            hi, lo = sorted(group, key=lambda s: s.reward, reverse=True)
            assert hi.advantage >= lo.advantage
        # the samples agree with TRL's own aggregates of the same generation batch
        assert sum(s.length for s in rows) / 4 == pytest.approx(metric["train/completions/mean_length"][step])
        assert sum(s.truncated for s in rows) / 4 == pytest.approx(
            metric["train/completions/clipped_ratio"][step]
        )
        for name in ("short", "has_digit"):
            mean = sum(s.rewards[name] for s in rows) / 4
            assert mean == pytest.approx(metric[f"train/rewards/{name}/mean"][step], abs=1e-6)
        assert sum(s.reward for s in rows) / 4 == pytest.approx(metric["train/reward"][step], abs=1e-6)
    assert endings == {True, False}  # both a completion cut at max_completion_length and one that stopped
