"""An evaluation reports pass@k, pass^k, maj@k and avg@n with their bootstrap intervals, and its full
protocol (issue 15 point 5): trainers.eval.report on the real math verifier's verdicts, and
trainers.eval.core.evaluate / the CLI on a tiny policy."""

from __future__ import annotations

import json

import pytest

from trainers.common.models import load_policy
from trainers.common.rewards import RewardPool, score
from trainers.common.rollout import TorchSampler
from trainers.common.tiny import build_tiny_model
from trainers.eval import report
from trainers.eval.core import Problem, evaluate
from trainers.eval.estimators import ProblemCounts, maj_at_k
from trainers.eval.run import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_answer_classes_come_from_the_verifier():
    # problem 1: 2 correct (different spellings of 1/2), 2 x "3" (one with spaces), one "4", one no answer
    one = ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{3}", "\\boxed{ 3 }", "\\boxed{4}", "I give up"]
    # problem 2: all six say 7, the reference
    two = ["the answer is 7"] * 6
    verdicts = [score("math", t, "1/2") for t in one] + [score("math", t, "7") for t in two]
    metrics, protocol = report.honest_metrics(["math", "math"], verdicts, 6, [1, 2, 6])
    expected = (maj_at_k(ProblemCounts(2, (2, 1), 1), 2) + 1.0) / 2
    assert metrics["maj@2"] == pytest.approx(expected)
    assert metrics["avg@6"] == pytest.approx((2 / 6 + 1) / 2)
    assert metrics["pass@6"] == 1.0 and metrics["pass^6"] == pytest.approx(0.5)
    for name in ("avg@6", "pass@1", "pass@2", "pass@6", "pass^2", "maj@2", "maj@6"):
        lo, hi = metrics[f"{name}_ci"]
        assert lo <= metrics[name] <= hi
    assert protocol["n"] == 6 and protocol["ks"] == [1, 2, 6]
    assert protocol["interval"]["resamples"] == 1000 and protocol["estimators"]
    assert "pass@4_ci" not in metrics and all(isinstance(v, float) for v in report.scalars(metrics).values())


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("p"), seed=0, hidden=32, layers=1, heads=2)


def test_evaluate_reports_intervals_and_the_protocol(policy):
    model, tok = load_policy(policy)
    problems = [Problem("1+2=", "math", "3"), Problem("4+4=", "math", "8"), Problem("2+2=", "math", "4")]
    with RewardPool(1) as pool:
        metrics, protocol = evaluate(
            TorchSampler(model, tok), problems, pool, k=4, temperature=0.7, top_p=0.9, max_new_tokens=4,
            chat_template="none", tokenizer=tok,
        )  # fmt: skip
    for name in ("avg@4", "pass@1", "pass@2", "pass@4", "pass^2", "pass^4", "maj@1", "maj@2", "maj@4"):
        assert 0.0 <= metrics[name] <= 1.0, name
        lo, hi = metrics[f"{name}_ci"]
        assert 0.0 <= lo <= metrics[name] <= hi <= 1.0, name
    assert metrics["pass@1"] == pytest.approx(metrics["avg@4"])
    assert {"no_answer_rate", "truncation_rate"} <= set(metrics)
    assert protocol["k"] == protocol["n"] == 4 and protocol["ks"] == [1, 2, 4]
    assert (protocol["temperature"], protocol["top_p"], protocol["max_new_tokens"]) == (0.7, 0.9, 4)
    assert protocol["chat_template"] == "none" and len(protocol["chat_template_sha256"]) == 12
    assert protocol["verifier"] and protocol["estimators"]
    json.dumps(metrics), json.dumps(protocol)  # what the Evaluation row stores
    with RewardPool(1) as pool, pytest.raises(ValueError, match="k=8 > n=4"):
        evaluate(TorchSampler(model, tok), problems, pool, k=4, temperature=0.7, max_new_tokens=2,
                 chat_template="none", tokenizer=tok, ks=[8])  # fmt: skip


def test_cli_refuses_a_k_above_the_samples(policy, tmp_path, capsys):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    assert main(["--checkpoint", str(policy), "--benchmark", str(bench), "--k", "4", "--ks", "2,8"]) == 2
    assert "--ks" in capsys.readouterr().err
