"""Mean and band of groups of runs, per metric key, computed on the server.

The compare page groups runs (by a config field, by the run's group, "all but the seed"); with 100
runs a grouped chart needs only one mean and one band per group, so the page fetches
O(groups x points) instead of every run's series.

Rule (the same one compare.js applied in the browser before): a group's curves are put on one step
grid, the union of its members' steps. A member's value at a grid step is its own point where it
logged that step, else the linear interpolation between its neighbouring points; outside its first
and last step it has no value. At each step the aggregate is taken over the members with a finite
value there: ``count``, ``mean``, ``std`` (sample, ddof=1; 0 for one value), ``min``, ``max``; a step
where no member has a finite value is NaN (null in JSON). Longer than ``max_points``, the grid is
thinned with M4 on the mean (spikes of the mean survive) and every column is taken at those steps.

Reads go through the one metric reader, webapp.runs.metric_store.series_read."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from django.core.cache import cache

from webapp.runs.downsample import m4
from webapp.runs.metric_store import series_read
from webapp.runs.models import MetricSeries

COLUMNS = ("mean", "std", "min", "max", "count")


def _on_grid(grid: np.ndarray, steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One member's values at the grid steps (see the module docstring)."""
    out = np.full(len(grid), np.nan)
    if not len(steps):
        return out
    pos = np.searchsorted(steps, grid)
    exact = (pos < len(steps)) & (steps[np.minimum(pos, len(steps) - 1)] == grid)
    out[exact] = values[pos[exact]]
    inside = ~exact & (grid > steps[0]) & (grid < steps[-1])
    if inside.any():
        finite = np.isfinite(values)
        if finite.sum() >= 2:
            out[inside] = np.interp(grid[inside], steps[finite], values[finite])
    return out


def aggregate_members(
    members: Sequence[tuple[np.ndarray, np.ndarray]], *, max_points: int | None = None
) -> dict[str, np.ndarray]:
    """``{"steps", "mean", "std", "min", "max", "count"}`` of the members' ``(steps, values)``
    (each step-sorted)."""
    members = [(np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for s, v in members]
    members = [(s, v) for s, v in members if len(s)]
    if not members:
        empty = np.empty(0)
        return {"steps": np.empty(0, dtype=np.int64), **{c: empty for c in COLUMNS}}
    first = members[0][0]
    if all(len(s) == len(first) and np.array_equal(s, first) for s, _ in members):
        grid = first
        matrix = np.vstack([v for _, v in members])
    else:
        grid = np.unique(np.concatenate([s for s, _ in members]))
        matrix = np.vstack([_on_grid(grid, s, v) for s, v in members])
    finite = np.isfinite(matrix)
    if finite.all():
        # the common case (every member logged every step): numpy's plain reductions, several
        # times faster than the nan-aware ones on 10 x 20,000 values
        count = np.full(len(grid), len(members), dtype=np.int64)
        mean = matrix.mean(axis=0)
        lo = matrix.min(axis=0)
        hi = matrix.max(axis=0)
        std = matrix.std(axis=0, ddof=1) if len(members) > 1 else np.zeros(len(grid))
    else:
        count = finite.sum(axis=0)
        masked = np.where(finite, matrix, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns, one-value std
            mean = np.nanmean(masked, axis=0)
            lo = np.nanmin(masked, axis=0)
            hi = np.nanmax(masked, axis=0)
            std = np.nanstd(masked, axis=0, ddof=1)
        std = np.where(count == 1, 0.0, std)
    out = {"steps": grid, "mean": mean, "std": std, "min": lo, "max": hi, "count": count.astype(np.int64)}
    if max_points is not None and len(grid) > max_points:
        idx = m4(grid, mean, max_points)
        out = {name: column[idx] for name, column in out.items()}
    return out


def group_aggregate(
    groups: Sequence[Sequence[int]],
    keys: Iterable[str] | None = None,
    *,
    max_points: int | None = None,
) -> list[dict[str, dict[str, np.ndarray]]]:
    """For each group (a list of run ids), ``{key: aggregate_members(...)}`` over its members'
    full-resolution series, for every key any member logged (or only ``keys``).

    A downsampled aggregate is cached (as webapp.runs.table.compare_series caches downsampled series)
    under its members' series ids, point counts and last steps: any write to a member changes them,
    so the groups of finished runs are read and averaged once; only groups with a new point are
    computed again."""
    from webapp.runs.table import compare_cache_enabled

    run_ids = list(dict.fromkeys(rid for group in groups for rid in group))
    keys = list(keys) if keys is not None else None
    if max_points is None or not compare_cache_enabled():
        return _aggregate(groups, series_read(run_ids, keys), max_points)
    rows = MetricSeries.objects.filter(run_id__in=run_ids)
    if keys is not None:
        rows = rows.filter(key__in=keys)
    version: dict[tuple[int, str], tuple] = {
        (run_id, key): (sid, count, last)
        for sid, run_id, key, count, last in rows.values_list("id", "run_id", "key", "count", "last_step")
    }
    cache_keys = []
    for group in groups:
        member_ids = set(group)
        members = {
            key: sorted(version[(rid, key)] for rid in group if (rid, key) in version)
            for key in sorted({k for (rid, k) in version if rid in member_ids})
        }
        digest = hashlib.sha1(repr((members, max_points)).encode()).hexdigest()
        cache_keys.append(f"orlab:group:{digest}")
    hits = cache.get_many(cache_keys)
    todo = [i for i, ck in enumerate(cache_keys) if ck not in hits]
    out: list = [hits.get(ck) for ck in cache_keys]
    if todo:
        todo_groups = [groups[i] for i in todo]
        todo_runs = list(dict.fromkeys(rid for group in todo_groups for rid in group))
        fresh = _aggregate(todo_groups, series_read(todo_runs, keys), max_points)
        for i, result in zip(todo, fresh, strict=True):
            out[i] = result
        cache.set_many({cache_keys[i]: out[i] for i in todo}, GROUP_CACHE_SECONDS)
    return out


GROUP_CACHE_SECONDS = 24 * 3600


def _aggregate(groups, data, max_points) -> list[dict[str, dict[str, np.ndarray]]]:
    out = []
    for group in groups:
        member_series = [data.get(rid, {}) for rid in group]
        group_keys = sorted({k for s in member_series for k in s})
        out.append(
            {
                key: aggregate_members(
                    [(s[key]["steps"], s[key]["values"]) for s in member_series if key in s],
                    max_points=max_points,
                )
                for key in group_keys
            }
        )
    return out
