"""The theory-rate checks of a tabular run, read from its logged ``gap`` (issue 16 point 9).

The tabular trainer logs the optimality gap e_k = V*(rho) - V^k(rho) at every iteration k; the two
theory papers (arXiv 2404.03372, 2305.19575) say how fast it must fall for each method. This module
fits the three measures of ``trainers/tabular/rates.py`` on the stored series and says which one the
theory speaks to for the run's method and whether the fit agrees:

- linear rate q: exp(slope) of log e_k against k over the last 30 % of the iterates above 1e-12
  (below it is the exact evaluation's rounding noise); q < 1 is linear convergence;
- log-log slope: of log e_k against log k over the second half of the iterates, those above 1e-12
  (-1 is O(1/k));
  bounds -1.3 .. -0.7 as in tests/trainers/test_tabular_convergence.py;
- order: slope of log e_{k+1} against log e_k over the last two pairs above 1e-13 (2 is quadratic);
  bounds 1.6 .. 2.4, as in that test.

Why a copy of the three fits: the web app may import only the trainer seams (tests/test_boundaries.py),
and rates.py is a trainer module. tests/webapp/test_u3_tabular_rates.py checks that both give the same
numbers on the same series.

At most the last ``MAX_POINTS`` iterations are read (a 1,000,000-iteration run would otherwise read
16 MB per page view); the fits use the true step numbers, so a long run's slope is over the second half
of what was read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webapp.runs import capabilities
from webapp.runs.metric_store import series_read
from webapp.runs.models import MetricSeries, Run

MAX_POINTS = 200_000
LINEAR_FLOOR = 1e-12
ORDER_FLOOR = 1e-13
SLOPE_BOUNDS = (-1.3, -0.7)
ORDER_BOUNDS = (1.6, 2.4)

#: What the theory says of each method's gap, and which measure checks it.
THEORY = {
    "projected_pg": ("linear", "linear for any constant step, exact in finitely many steps"),
    "projected_q_ascent": ("linear", "linear (projected policy iteration with a step)"),
    "softmax_pg": ("sublinear", "sublinear, O(1/k): log-log slope about -1"),
    "softmax_npg": ("linear", "linear for any constant step; faster with a larger step"),
    "entropy_softmax_pg": ("linear", "linear, even far above the classical step bound"),
    "entropy_softmax_npg": ("linear", "locally linear: the gap contracts by (1 - alpha)^2 per step"),
    "soft_pi": ("quadratic", "locally quadratic: order about 2"),
    "hadamard_pg": ("linear", "O(1/k) at first, then locally linear"),
}


# --- the fits (the same arithmetic as trainers/tabular/rates.py, on (steps, values)) ---------------


def linear_rate(
    steps: np.ndarray, e: np.ndarray, floor: float = LINEAR_FLOOR, tail: float = 0.3
) -> float | None:
    above = e > floor
    k, v = steps[above], e[above]
    if len(k) < 2:
        return None
    n = max(2, int(np.ceil(tail * len(k))))
    k, v = k[-n:], v[-n:]
    return float(np.exp(np.polyfit(k.astype(np.float64), np.log(v), 1)[0]))


def loglog_slope(steps: np.ndarray, e: np.ndarray, floor: float = LINEAR_FLOOR) -> float | None:
    """Over the second half of the steps, k >= 1 and e_k above ``floor`` (a converged run's noise at
    the floor, or an exact 0, would make the slope say nothing about the rate)."""
    if len(steps) < 4:
        return None
    half = steps >= steps[0] + (steps[-1] - steps[0]) / 2
    keep = half & (steps >= 1) & (e > floor)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(steps[keep].astype(np.float64)), np.log(e[keep]), 1)[0])


def convergence_order(e: np.ndarray, floor: float = ORDER_FLOOR, pairs: int = 2) -> float | None:
    """Over consecutive logged iterations only (the caller passes a gap-free run of steps)."""
    if len(e) < 3:
        return None
    ok = np.flatnonzero((e[:-1] > floor) & (e[1:] > floor))
    if len(ok) < 2:
        return None
    ok = ok[-pairs:]
    return float(np.polyfit(np.log(e[ok]), np.log(e[ok + 1]), 1)[0])


# --- the run page's panel ---------------------------------------------------------------------------


def _last_points(run_id: int, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    count = MetricSeries.objects.filter(run_id=run_id, key=key).values_list("count", flat=True).first()
    if not count:
        return None
    since = None
    if count > MAX_POINTS:
        last = series_read([run_id], [key], max_points=2)[run_id].get(key)
        since = int(last["steps"][-1]) - MAX_POINTS if last is not None else None
    entry = series_read([run_id], [key], since_step=since)[run_id].get(key)
    if entry is None:
        return None
    steps, values = np.asarray(entry["steps"]), np.asarray(entry["values"], dtype=np.float64)
    finite = np.isfinite(values)
    return steps[finite], values[finite]


def _within(value: float | None, bounds: tuple[float, float]) -> bool | None:
    return None if value is None else bounds[0] <= value <= bounds[1]


def tabular_rates(run: Run) -> dict[str, Any] | None:
    """The panel's content for a tabular run with a logged gap; None for other runs (the panel hides).

    {method, expected, expectation, points, first_step, last_step, final_gap, linear_rate, loglog_slope,
    order, alpha_rate (entropy NPG's (1 - alpha)^2), agrees (True/False/None: the expected measure's
    verdict, None when too few points)}"""
    if "rates" not in capabilities.panels(run.kind):  # the trainer asks for the panel in its spec
        return None
    config = run.config or {}
    method = config.get("method")
    points = _last_points(run.pk, "gap")
    if method not in THEORY or points is None or not len(points[0]):
        return None
    steps, e = points
    expected, expectation = THEORY[method]
    consecutive = np.flatnonzero(np.diff(steps) != 1)
    tail = slice(int(consecutive[-1]) + 1 if len(consecutive) else 0, None)
    rates = {
        "linear_rate": linear_rate(steps, e),
        "loglog_slope": loglog_slope(steps, e),
        "order": convergence_order(e[tail]),
    }
    if expected == "linear":
        agrees = None if rates["linear_rate"] is None else rates["linear_rate"] < 1.0
    elif expected == "sublinear":
        agrees = _within(rates["loglog_slope"], SLOPE_BOUNDS)
    else:
        agrees = _within(rates["order"], ORDER_BOUNDS)
    alpha_rate = None
    if method == "entropy_softmax_npg":
        try:
            gamma = float((config.get("mdp") or {}).get("gamma", 0.9))
            alpha = float(config["step_size"]) * float(config.get("tau", 0.1)) / (1.0 - gamma)
            alpha_rate = (1.0 - alpha) ** 2
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            alpha_rate = None
    return {
        "method": method,
        "expected": expected,
        "expectation": expectation,
        "points": len(steps),
        "first_step": int(steps[0]),
        "last_step": int(steps[-1]),
        "final_gap": float(e[-1]),
        **rates,
        "alpha_rate": alpha_rate,
        "agrees": agrees,
        "active": run.is_active,
    }
