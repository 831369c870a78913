"""The whole DAPO pipeline on tiny data (CPU): from an SFT warm start of the tiny model, one run
generates Monte-Carlo step values, trains a critic whose calibration improves, then the actor, which
raises held-out accuracy; the final checkpoint is a loadable policy with its critic beside it.

The warm start is the shared slipped-distillation SFT (tests/trainers/conftest.py): half its traces end
with a boxed answer one too high, so the critic sees the value fall at that step and the actor has a
step-level advantage to learn from. On clean SFT data the tiny model's errors are arithmetic it cannot
learn from ~1,000 states, and the actor's accuracy does not move (measured: avg@4 0.124 -> 0.111)."""

from __future__ import annotations

import json

import pytest
import torch

from trainers.base import MemorySink, get_spec
from trainers.common.models import load_policy, load_value_model

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow, pytest.mark.timeout(900)]

#: The critic's expected calibration error on held-out prompts must end at most this fraction of the
#: fresh head's (measured from this warm start: 0.151 -> 0.072; from a clean 200-step SFT, whose MC
#: values average about 0.1, 0.379 -> 0.027).
ECE_RATIO = 0.6


#: Held-out avg@4 (temperature 1, 150 problems x 4) must rise by at least this. Measured with the
#: preset from this warm start (2026-12-06): seed 1 (this test) 0.280 -> 0.307, seed 2 0.247 -> 0.333,
#: seed 3 0.245 -> 0.333. The spread is seed-to-seed, not a regression: the code before issue 10 gave
#: 0.311 -> 0.414 at seed 1 on another machine, but +0.057 / +0.030 / +0.038 at seeds 1-3 on this one
#: (the same warm-start recipe, built by that code), where today's code gives +0.042 / +0.082 / +0.102;
#: rollout noise is now keyed by prompt and sample, so every seed draws new samples. The gain comes from the final step (the critic does not tell a right
#: from a wrong intermediate sum: mean advantage -0.002 vs -0.004), so the margin is small; from a
#: chat-templated 450-step warm start no actor setting tried gained (0.247 -> 0.23-0.26).
MIN_GAIN = 0.02


@pytest.fixture(scope="module")
def dapo_run(slipped_warm_start, tmp_path_factory):
    torch.set_num_threads(1)
    spec = get_spec("dapo")
    cfg = spec.validate(
        {**spec.presets["tiny-cpu-demo"], "model_path": str(slipped_warm_start.policy),
         "train_dataset": str(slipped_warm_start.train), "eval_dataset": str(slipped_warm_start.held_out),
         "chat_template": slipped_warm_start.chat_template}
    )  # fmt: skip
    sink = MemorySink(workdir=tmp_path_factory.mktemp("dapo"))
    summary = spec.train_fn()(cfg, sink)
    return cfg, sink, summary


def test_stages_run_in_order_on_one_step_counter(dapo_run):
    _, sink, summary = dapo_run
    stage = sink.metrics["stage"]
    steps = sorted(stage)
    assert steps == list(range(steps[-1] + 1)) and summary["step"] == steps[-1] and not summary["stopped"]
    assert [stage[s] for s in steps] == sorted(stage[s] for s in steps)  # 0s, then 1s, then 2s
    assert {0.0, 1.0, 2.0} == set(stage.values())
    for key in ("critic/loss", "critic/ece", "critic/auc"):
        assert all(stage[s] == 1.0 for s in sink.metrics[key]), key
    for key in (
        "actor/loss",
        "actor/adv_mean",
        "actor/abs_log_ratio",
        "actor/corr_log_ratio_adv",
        "policy/entropy",
    ):
        assert sink.metrics[key] and all(stage[s] == 2.0 for s in sink.metrics[key]), key


def test_step_values_are_published_in_the_dataset_format(dapo_run):
    cfg, sink, _ = dapo_run
    [(kind, name, path, meta)] = sink.datasets
    assert kind == "step_values" and name == "dapo-step-values-iter0"
    assert meta["mc_rollouts"] == cfg.generate.mc_rollouts and meta["delimiter"] == "\n"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == cfg.generate.prompts * cfg.generate.solutions_per_prompt
    for row in rows:
        assert "".join(row["steps"]) == row["solution"] and len(row["values"]) == len(row["steps"]) + 1
        assert all(0 <= v <= 1 for v in row["values"]) and row["values"][-1] == float(row["correct"])
    # values carry information: after a wrong solution's steps they are lower than after a right one's
    right = [r["values"][-2] for r in rows if r["correct"]]
    wrong = [r["values"][-2] for r in rows if not r["correct"]]
    assert right and wrong and sum(right) / len(right) > sum(wrong) / len(wrong) + 0.2


def test_the_critic_learns_calibrated_values(dapo_run):
    _, sink, _ = dapo_run
    ece = sink.series("critic/ece")
    assert ece[-1] <= ECE_RATIO * ece[0], ece
    # AUC is logged but not asserted: 0.78 with the preset's 300 prompts, 0.54 with this test's 240
    assert 0 <= sink.series("critic/auc")[-1] <= 1
    [calib] = [e for e in sink.evaluations if e[1] == "critic-calibration"]
    assert calib[2]["ece"] == pytest.approx(ece[-1])
    # the reliability diagram's bins are in the evaluation only (the run page draws them)
    assert sum(calib[2][f"bin_{b:02d}_count"] for b in range(10)) > 0
    assert not any(k.startswith("critic/calib/") for k in sink.metrics)
    curves = [s for _, s in sink.samples if "values_critic" in s]
    assert curves and all(len(c["values_critic"]) == len(c["values_mc"]) for c in curves)


def test_the_actor_is_evaluated_and_saved_as_a_loadable_policy(dapo_run, tmp_path):
    _, sink, summary = dapo_run
    accuracy = sink.series("val/accuracy")
    assert len(accuracy) == 2 and all(0 <= a <= 1 for a in accuracy)
    assert [e[0] for e in sink.evaluations if e[1] == "eval_dataset"] == [0, summary["step"]]
    assert max(sink.series("actor/abs_log_ratio")) > 0  # the policy moved away from pi_ref
    step, directory, metrics = sink.checkpoints[-1]
    assert step == summary["step"] and metrics["val/accuracy"] == accuracy[-1]
    model, tokenizer = load_policy(directory)
    critic = load_value_model(directory / "critic")
    ids = torch.tensor([tokenizer.encode("17+25+9=")])
    assert model(ids).logits.shape[-1] == len(tokenizer) and critic(ids).shape == ids.shape


def test_the_actor_raises_held_out_accuracy(dapo_run):
    _, sink, summary = dapo_run
    (s0, _, before, protocol), (s1, _, after, _) = [e for e in sink.evaluations if e[1] == "eval_dataset"]
    assert (s0, s1) == (0, summary["step"]) and protocol["k"] == 4
    print(f"DAPO held-out avg@4 {before['avg@4']:.3f} -> {after['avg@4']:.3f}")
    assert after["avg@4"] >= before["avg@4"] + MIN_GAIN, (before, after)
    # the actor learned what the critic says: its log-ratios follow the advantages
    corr = sink.series("actor/corr_log_ratio_adv")
    assert sum(corr[-10:]) / 10 > 0.1, corr[-10:]
