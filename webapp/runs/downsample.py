"""Downsampling that keeps spikes visible (M4: first, last, min and max of each bucket).

Buckets are equal-width in step, so a chart of the result has the same shape as the full series at
screen resolution: a single-step loss spike survives as its bucket's max, gaps stay gaps."""

import numpy as np


def m4(steps: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices (sorted) of at most ``max_points`` points of a step-sorted series to draw.

    NaN values are ignored for the min/max choice; a bucket of only NaNs keeps its first and last."""
    n = len(steps)
    if n <= max_points:
        return np.arange(n)
    n_buckets = max(1, max_points // 4)
    lo, hi = int(steps[0]), int(steps[-1])
    span = hi - lo + 1
    bucket = ((steps - lo).astype(np.float64) * n_buckets / span).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], n] - 1
    counts = ends - starts + 1

    picks = [starts, ends]
    for reduce in (np.fmin, np.fmax):
        extreme = reduce.reduceat(values, starts)
        hit = np.flatnonzero(values == np.repeat(extreme, counts))  # NaN never compares equal
        if hit.size:
            owner = np.searchsorted(starts, hit, side="right") - 1
            first_of_owner = np.r_[True, owner[1:] != owner[:-1]]
            picks.append(hit[first_of_owner])
    return np.unique(np.concatenate(picks))
