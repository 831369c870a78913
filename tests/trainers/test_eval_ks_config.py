"""The k values of the RL and DAPO in-run evaluations (issue 15 point 6): eval.ks in the config, each
k from 1 to eval.k (the samples per problem), sorted without repeats; trainers.eval.core computes
pass@k / pass^k / maj@k at exactly those k."""

import pytest
from pydantic import ValidationError

from trainers.dapo.config import DAPOConfig
from trainers.eval import report
from trainers.rl.config import RLConfig


@pytest.mark.parametrize("model", [RLConfig, DAPOConfig])
def test_ks_are_checked_against_the_samples_per_problem(model):
    assert model.model_validate({"eval": {"k": 8, "ks": [8, 1, 3, 3]}}).eval.ks == [1, 3, 8]
    assert model.model_validate({"eval": {"k": 8}}).eval.ks == []  # the default 1, 2, 4, ... k
    for bad in ([9], [0], [1, 2, 16]):
        with pytest.raises(ValidationError) as exc:
            model.model_validate({"eval": {"k": 8, "ks": bad}})
        assert [e["loc"] for e in exc.value.errors()] == [("eval", "ks")]


def test_the_estimators_report_exactly_the_ks_asked():
    class Verdict:
        def __init__(self, reward):
            self.correct, self.reward, self.verdict, self.extracted = (
                bool(reward),
                reward,
                "correct" if reward else "wrong",
                str(reward),
            )

    verdicts = [Verdict(r) for r in (1, 0, 0, 1, 1, 1, 0, 0)]  # 2 problems x 4 samples
    metrics, protocol = report.honest_metrics(["math", "math"], verdicts, 4, [1, 3])
    assert {m for m in metrics if m.startswith("pass@") and not m.endswith("_ci")} == {"pass@1", "pass@3"}
