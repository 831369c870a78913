"""The stacked rule evaluation (webapp.alerts.engine._zscore_stacked and friends: a run's threshold and
z-score rules in one numpy pass, issue 15a) against a plain per-point reference written from the
definitions: z of a point against the run's finite history before it (sample standard deviation,
Welford), no score before ``min_points`` points, an episode starting where the condition turns true."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webapp.alerts import engine


def compiled(rule_id: int, kind: str, **params) -> engine.Compiled:
    return engine.Compiled(rule_id, f"r{rule_id}", kind, params, "warning", "", "", "", 1, (f"k{rule_id}",))


def reference_z(history: list[float], values: np.ndarray, min_points: int) -> list[float]:
    """z of each value against the finite values before it (history first), NaN where unscored."""
    seen = [x for x in history if math.isfinite(x)]
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        if len(seen) < min_points:
            z = math.nan
        else:
            mean = sum(seen) / len(seen)
            var = sum((x - mean) ** 2 for x in seen) / max(len(seen) - 1, 1)
            std = math.sqrt(var)
            z = (v - mean) / std if std > 0 else (math.copysign(math.inf, v - mean) if v != mean else 0.0)
        out.append(z)
        seen.append(float(v))
    return out


def passes(z: float, bound: float, direction: str) -> bool:
    if math.isnan(z):
        return False
    return z >= bound if direction == "up" else z <= -bound if direction == "down" else abs(z) >= bound


def test_stacked_zscores_match_the_definition_over_batches_with_gaps_and_mixed_rules():
    rng = np.random.default_rng(7)
    rules = [
        compiled(1, "zscore", z=2.0, direction="both", min_points=5),
        compiled(2, "zscore", z=1.5, direction="up", min_points=3),
        compiled(3, "zscore", z=2.5, direction="down", min_points=10),
    ]
    states = [engine.State(r.id, 1, r.sources[0]) for r in rules]
    history: list[list[float]] = [[] for _ in rules]
    fired = 0
    for batch in range(6):
        values = rng.normal(0.0, 1.0 + batch, size=(len(rules), 40))
        values[rng.random(values.shape) < 0.05] = np.nan  # gaps neither score nor count
        values[0, 3] = np.inf
        values[1, 7] = 25.0  # a spike well past every bound
        cond, z = engine._zscore_stacked(rules, values, states)
        for i, rule in enumerate(rules):
            want = reference_z(history[i], values[i], rule.params["min_points"])
            np.testing.assert_allclose(z[i], want, rtol=1e-9, atol=1e-9, equal_nan=True)
            want_cond = [passes(x, rule.params["z"], rule.params["direction"]) for x in want]
            assert cond[i].tolist() == want_cond
            fired += sum(want_cond)
            history[i] += values[i].tolist()
            finite = [x for x in history[i] if math.isfinite(x)]
            assert states[i].n == len(finite)
            assert states[i].mean == pytest.approx(np.mean(finite), rel=1e-9, abs=1e-12)
            assert states[i].m2 == pytest.approx(np.sum((np.array(finite) - np.mean(finite)) ** 2), rel=1e-9)
    assert fired > 0  # the comparison saw conditions that hold, not only ones that don't


def test_one_rule_and_a_stack_of_one_agree_and_carry_the_unflushed_moments():
    rule = compiled(1, "zscore", z=3.0, direction="both", min_points=2)
    values = np.array([1.0, 2.0, 3.0, 50.0, np.nan, 2.5])
    a, b = engine.State(1, 1, "k1"), engine.State(1, 1, "k1")
    cond, z = engine._zscore(rule, values, a)
    cond2, z2 = engine._zscore_stacked([rule], values[None, :], [b])
    assert cond.tolist() == cond2[0].tolist() and np.allclose(z, z2[0], equal_nan=True)
    assert cond.tolist() == [False, False, False, True, False, False]
    finite = values[np.isfinite(values)]
    assert (a.dn, a.n) == (len(finite), len(finite))
    assert a.dmean == pytest.approx(finite.mean()) and a.dm2 == pytest.approx(
        ((finite - finite.mean()) ** 2).sum()
    )


def test_stacked_thresholds_with_mixed_operators():
    rules = [
        compiled(1, "threshold", op=">", value=1.0),
        compiled(2, "threshold", op="<=", value=-1.0),
        compiled(3, "threshold", op=">=", value=0.5),
    ]
    values = np.array([[0.0, 1.0, 1.5, np.nan], [-1.0, -2.0, 0.0, np.nan], [0.5, 0.4, 9.0, np.inf]])
    got = engine._threshold_stacked(rules, values)
    assert got.tolist() == [
        [False, False, True, False],
        [True, True, False, False],
        [True, False, True, True],
    ]
    same_op = engine._threshold_stacked([rules[0], compiled(4, "threshold", op=">", value=0.0)], values[:2])
    assert same_op.tolist() == [[False, False, True, False], [False, False, False, False]]


def test_stacked_episode_starts_match_one_row_at_a_time():
    rng = np.random.default_rng(3)
    cond = rng.random((5, 30)) < 0.4
    cond[2] = False
    was_active = np.array([True, False, True, False, True])
    starts, active = engine._episode_starts_stacked(cond, was_active)
    for i in range(len(cond)):
        one, open_after = engine._episode_starts(cond[i], bool(was_active[i]))
        assert starts[i].tolist() == one.tolist()
        assert bool(active[i]) == open_after
    assert starts[2].tolist() == [] and not active[2]
