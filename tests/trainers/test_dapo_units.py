"""DAPO's pure parts: step splitting, Monte-Carlo step values against a policy whose success
probabilities are known, the actor loss against hand-computed cases, calibration and AUC."""

from __future__ import annotations

import math
import random

import pytest
import torch

from trainers.common.rewards import RewardPool
from trainers.common.rollout import Completion
from trainers.dapo.actor import dapo_loss, to_candidate
from trainers.dapo.critic import calibration, roc_auc
from trainers.dapo.steps import StepSplitter
from trainers.dapo.values import Timings, generate_step_data
from trainers.eval.core import Problem

# --- steps --------------------------------------------------------------------------------------


def test_newline_steps_keep_their_delimiter_and_round_trip():
    splitter = StepSplitter(delimiter="\n")
    text = "17+25=42\n42+9=51\n\\boxed{51}"
    steps = splitter.split(text)
    assert steps == ["17+25=42\n", "42+9=51\n", "\\boxed{51}"]
    assert "".join(steps) == text
    assert splitter.split("a\n\nb\n") == ["a\n", "\n", "b\n"]  # a blank line is a step; no empty tail
    assert splitter.split("") == [""] and splitter.split("no delimiter") == ["no delimiter"]
    assert StepSplitter(delimiter="\n\n").split("x\ny\n\nz") == ["x\ny\n\n", "z"]


def test_step_markers_start_steps_and_round_trip():
    splitter = StepSplitter(mode="marker", marker=r"Step \d+:")
    text = "Let us add. Step 1: 17+25=42 Step 2: 42+9=51\nStep 3: \\boxed{51}"
    steps = splitter.split(text)
    assert steps == ["Let us add. ", "Step 1: 17+25=42 ", "Step 2: 42+9=51\n", "Step 3: \\boxed{51}"]
    assert "".join(steps) == text
    assert splitter.split("Step 1: a Step 2: b") == ["Step 1: a ", "Step 2: b"]
    assert splitter.first_step("Step 3: c Step 4: d") == ("Step 3: c ", True)
    assert splitter.first_step("Step 4: \\boxed{1}") == ("Step 4: \\boxed{1}", False)


def test_first_step_and_max_steps():
    splitter = StepSplitter(delimiter="\n", max_steps=2)
    assert splitter.first_step("42+9=51\n\\boxed{51}") == ("42+9=51\n", True)
    assert splitter.first_step("\\boxed{51}") == ("\\boxed{51}", False)
    assert splitter.split("a\nb\nc\nd") == ["a\n", "b\nc\nd"]  # the tail is folded into the last step
    with pytest.raises(ValueError):
        StepSplitter(delimiter="")
    with pytest.raises(ValueError):
        StepSplitter(mode="marker", marker="x*")  # matches the empty string


# --- Monte-Carlo values -------------------------------------------------------------------------


class TwoStepPolicy:
    """A RolloutEngine with known values. A prompt "q=0.7;" is solved in two steps, each "g\\n"
    (good, probability q) or "b\\n" (bad), then "\\boxed{1}" when both were good, else "\\boxed{0}".
    So V(prompt) = q^2, V(after g) = q, V(after b) = 0, V(after g g) = 1."""

    def generate(self, prompts, *, n=1, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=256, seed=None):
        rng = random.Random(seed)
        out = []
        for prompt in prompts:
            head, _, done = prompt.partition(";")
            q = float(head.removeprefix("q="))
            group = []
            for _ in range(n):
                steps = done.split("\n")[:-1]
                while len(steps) < 2:
                    steps.append("g" if rng.random() < q else "b")
                text = "".join(s + "\n" for s in steps[len(done.split("\n")) - 1 :])
                text += "\\boxed{1}" if all(s == "g" for s in steps) else "\\boxed{0}"
                ids = list(range(len(text)))
                group.append(Completion([0], ids, text, [0.0] * len(ids), False, "stop"))
            out.append(group)
        return out

    def sync_weights(self, model):
        pass


def true_value(q: float, prefix: str) -> float:
    steps = prefix.split("\n")[:-1]
    return 0.0 if "b" in steps else q ** (2 - len(steps))


def test_mc_values_match_known_success_probabilities():
    problems = [Problem("q=0.7;", "math", "1"), Problem("q=0.4;", "math", "1")]
    mc = 400
    timings = Timings()
    with RewardPool(1) as pool:
        rows = generate_step_data(
            TwoStepPolicy(), pool, problems, StepSplitter(delimiter="\n"), solutions_per_prompt=12,
            mc_rollouts=mc, temperature=1.0, max_new_tokens=16, seed=3, timings=timings,
        )  # fmt: skip
    assert len(rows) == 24
    states = set()
    for row in rows:
        q = 0.7 if row["prompt"] == "q=0.7;" else 0.4
        assert "".join(row["steps"]) == row["solution"] and len(row["steps"]) == 3
        assert len(row["values"]) == 4 and row["values"][-1] == float(row["correct"])
        assert row["correct"] == row["solution"].startswith("g\ng\n")
        for t in range(3):
            prefix = "".join(row["steps"][:t])
            p = true_value(q, prefix)
            # 4.5 binomial standard deviations; exact where the outcome is certain
            tolerance = 4.5 * math.sqrt(p * (1 - p) / mc)
            assert abs(row["values"][t] - p) <= tolerance, (row["prompt"], prefix, row["values"][t], p)
            states.add((row["prompt"], prefix))
    # every distinct prefix state is rolled out once (shared by the solutions that reach it)
    assert timings.rollouts == 24 + len(states) * mc
    assert {r["problem_id"] for r in rows} == {0, 1}


# --- actor loss ---------------------------------------------------------------------------------


def test_dapo_loss_hand_computed_uncentered_and_centered():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.5], [-0.5, -1.0]])
    adv = torch.tensor([[0.2, -0.4], [0.0, 0.3]])
    # log-ratios [[0.5, -0.5], [0, 0.5]], targets A/0.5 = [[0.4, -0.8], [0, 0.6]]
    # residuals [[0.1, 0.3], [0, -0.1]] -> mean of squares (0.01 + 0.09 + 0 + 0.01) / 4
    out = dapo_loss(logp, ref, adv, beta=0.5)
    assert out.loss.item() == pytest.approx(0.0275)
    out.loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.05, 0.15], [0.0, -0.05]]))  # 2 r / 4
    assert out.abs_log_ratio == pytest.approx(0.375) and out.adv_mean == pytest.approx(0.025)
    # centered per state: log-ratios [[0.5, -0.5], [-0.25, 0.25]], targets [[0.6, -0.6], [-0.3, 0.3]]
    # residuals [[-0.1, 0.1], [0.05, -0.05]] -> (0.01 + 0.01 + 0.0025 + 0.0025) / 4
    centered = dapo_loss(logp.detach(), ref, adv, beta=0.5, center=True)
    assert centered.loss.item() == pytest.approx(0.00625)


def test_centering_ignores_the_log_partition_and_the_paper_form_does_not():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.2, -1.9, -2.5]])
    adv = torch.tensor([[0.5, 0.0, -0.5]])
    shifted = logp + 0.7  # the same policy up to a per-state constant (log Z)
    assert dapo_loss(shifted, ref, adv, beta=1.0, center=True).loss.item() == pytest.approx(
        dapo_loss(logp, ref, adv, beta=1.0, center=True).loss.item()
    )
    assert dapo_loss(shifted, ref, adv, beta=1.0).loss.item() != pytest.approx(
        dapo_loss(logp, ref, adv, beta=1.0).loss.item()
    )
    # the minimiser of the paper form is log pi = log pi_ref + A / beta
    assert dapo_loss(ref + adv / 2.0, ref, adv, beta=2.0).loss.item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        dapo_loss(logp, ref[:, :2], adv, beta=1.0)


# --- candidate steps ---------------------------------------------------------------------------


class CharTokenizer:
    """One id per character (ord), no special tokens: enough for to_candidate."""

    def encode(self, text, add_special_tokens=True):
        return [ord(ch) for ch in text]


def completion(text: str, *, eos: bool, truncated: bool) -> Completion:
    ids = [ord(ch) for ch in text] + ([2] if eos else [])
    return Completion([0], ids, text, [0.0] * len(ids), truncated, "length" if truncated else "stop")


def test_a_step_cut_at_max_step_tokens_is_never_the_final_answer():
    splitter, eos = StepSplitter(delimiter="\n"), {2}
    # the model stopped (EOS) before any boundary: the solution's last step, scored by the verifier
    final = to_candidate(completion("\\boxed{51}", eos=True, truncated=False), CharTokenizer(), splitter, eos)
    assert final.terminal and final.ids[-1] == 2
    # a boundary: an intermediate step
    step = to_candidate(completion("42+9=51\n4", eos=False, truncated=True), CharTokenizer(), splitter, eos)
    assert not step.terminal and step.text == "42+9=51\n"
    # cut at max_step_tokens with neither: an intermediate step too (its value comes from the critic),
    # not an answer "42+9=5" for the verifier
    cut = to_candidate(completion("42+9=5", eos=False, truncated=True), CharTokenizer(), splitter, eos)
    assert not cut.terminal and cut.text == "42+9=5" and cut.ids == [ord(c) for c in "42+9=5"]


def test_the_vllm_context_holds_the_longest_state_and_its_continuation():
    from trainers.base import get_spec
    from trainers.dapo.train import vllm_context

    spec = get_spec("dapo")
    cfg = spec.validate(spec.presets["tiny-cpu-demo"])  # 40 new tokens, 8 steps, 24-token steps, eval 40
    # prompt 30 + a whole 40-token solution as the prefix (+ one token per step boundary) + 40 more
    assert vllm_context(cfg, 30) == 30 + 40 + 8 + 40
    longer_eval = spec.validate({**spec.presets["tiny-cpu-demo"], "eval": {"max_new_tokens": 500}})
    assert vllm_context(longer_eval, 30) == 530


# --- critic metrics -----------------------------------------------------------------------------


def test_calibration_error_and_auc_by_hand():
    pred = torch.tensor([0.05, 0.15, 0.95, 0.85])
    target = torch.tensor([0.0, 0.0, 1.0, 0.5])
    ece, table = calibration(pred, target, bins=2)
    # bin [0, .5): mean pred 0.1, mean target 0 -> 0.1; bin [.5, 1]: 0.9 vs 0.75 -> 0.15; each half
    assert ece == pytest.approx(0.125)
    assert table[0] == (pytest.approx(0.1), 0.0, 2) and table[1][2] == 2
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == pytest.approx(0.5)  # a tie
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


# --- config -------------------------------------------------------------------------------------


def test_presets_validate_and_bad_values_name_their_field():
    from pydantic import ValidationError

    from trainers.base import get_spec

    spec = get_spec("dapo")
    assert spec.queue == "gpu" and "val/accuracy" in spec.primary_metrics
    tiny = spec.validate(spec.presets["tiny-cpu-demo"])
    assert tiny.steps.delimiter == "\n" and tiny.actor.center
    sweep = spec.sweep_presets["beta-sweep"]
    assert sweep["preset"] in spec.presets and sweep["grid"] == {"actor.beta": [0.1, 0.5, 1.0, 5.0]}
    for bad, field in (({"actor": {"beta": 0}}, "actor.beta"), ({"actor": {"candidates": 1}}, "actor.candidates"),
                       ({"steps": {"mode": "words"}}, "steps.mode"), ({"critic": {"loss": "l1"}}, "critic.loss")):  # fmt: skip
        with pytest.raises(ValidationError) as err:
            spec.validate(bad)
        assert field in {".".join(map(str, e["loc"])) for e in err.value.errors()}
