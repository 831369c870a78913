"""Empirical convergence rates of an error sequence e_0, e_1, ... (e.g. the logged ``gap``).

Used by the tests that check the papers' claims, and handy in notebooks:

- ``linear_rate``: q from a least-squares fit log e_k ~ c + k log q over the last part of the iterates
  above a floor (q < 1 means linear convergence);
- ``loglog_slope``: the slope of log e_k against log k over a window (-1 means O(1/k));
- ``convergence_order``: the slope of log e_{k+1} against log e_k over late pairs (2 means quadratic).
"""

from __future__ import annotations

import numpy as np


def _above(errors, floor: float) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(errors, dtype=np.float64)
    k = np.flatnonzero(e > floor)
    return k, e[k]


def linear_rate(errors, floor: float = 1e-12, tail: float = 0.3) -> float:
    """exp(slope) of log e_k against k, fitted on the last ``tail`` fraction of the iterates above ``floor``."""
    k, e = _above(errors, floor)
    n = max(2, int(np.ceil(tail * len(k))))
    if len(k) < 2:
        raise ValueError(f"fewer than two iterates above {floor:g}")
    k, e = k[-n:], e[-n:]
    return float(np.exp(np.polyfit(k, np.log(e), 1)[0]))


def loglog_slope(errors, start: int, stop: int) -> float:
    """Slope of log e_k against log k for start <= k < stop (start >= 1)."""
    k = np.arange(start, stop)
    e = np.asarray(errors, dtype=np.float64)[start:stop]
    return float(np.polyfit(np.log(k), np.log(e), 1)[0])


def convergence_order(errors, floor: float = 1e-12, pairs: int = 3) -> float:
    """Slope of log e_{k+1} against log e_k over the last ``pairs`` consecutive pairs above ``floor``."""
    e = np.asarray(errors, dtype=np.float64)
    ok = np.flatnonzero((e[:-1] > floor) & (e[1:] > floor))
    if len(ok) < 2:
        raise ValueError(f"fewer than two consecutive pairs above {floor:g}")
    ok = ok[-pairs:]
    return float(np.polyfit(np.log(e[ok]), np.log(e[ok + 1]), 1)[0])
