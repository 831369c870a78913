"""Summaries of stored metric points, kept on write, so that a downsampled read costs O(max_points).

Every MetricChunk (up to 4,096 points) carries, next to its points, one summary column per level:
``summary_64``, ``summary_256``, ``summary_1024`` and ``summary_4096``. Level L cuts the chunk into
blocks of L consecutive points (the last one may be shorter) and stores one ``RECORD`` per block:
its first, last, minimum and maximum point, each as (step, value, wall). They are computed by
``summarize`` whenever a chunk's points are written (metric_store._chunk_fields: new chunks, the
tail chunk that live appends grow, truncation), so they are never stale.

A read at ``max_points`` with B = max_points // 4 buckets picks the coarsest level whose blocks hold
no more points than a bucket does on average (count / B), so it reads between B and 4 B records per
series (96 bytes each), whatever the series' length: a 10,000,000-point series at max_points 2,000
reads 2,442 chunk records (234 kB) instead of 240 MB of points. ``m4_records`` then applies the M4
rule of webapp.runs.downsample to the blocks: a block belongs to the bucket of its first step
(edges snap to block starts), a bucket's minimum is the minimum of its blocks' minima (exact), the
same for the maximum, and its first and last points are its first block's first and its last
block's last point. The answer equals exact M4 (m4_buckets) over the same snapped buckets; the
tests hold the two to each other on random series.

Series with fewer than 64 points per bucket, series whose chunks overlap in steps (points that
arrived out of order) and chunks written before the summaries existed (the 0010 migration fills
them in) are read point by point instead."""

from __future__ import annotations

import numpy as np

from webapp.runs.downsample import bucket_width

LEVELS = (64, 256, 1024, 4096)  # points per block; 4096 = MetricChunk.CHUNK_POINTS: one record a chunk

RECORD = np.dtype(
    [
        ("first_step", "<i8"),
        ("last_step", "<i8"),
        ("min_step", "<i8"),
        ("max_step", "<i8"),
        ("first_value", "<f8"),
        ("last_value", "<f8"),
        ("min_value", "<f8"),
        ("max_value", "<f8"),
        ("first_wall", "<f8"),
        ("last_wall", "<f8"),
        ("min_wall", "<f8"),
        ("max_wall", "<f8"),
    ]
)


def column(level: int) -> str:
    return f"summary_{level}"


def summarize(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> dict[str, bytes]:
    """``{column: bytes}`` of the summary records of one chunk's points (step-sorted), every level."""
    n = len(steps)
    nan = np.isnan(values)
    lo_key = np.where(nan, np.inf, values)
    hi_key = np.where(nan, -np.inf, values)
    out = {}
    for level in LEVELS:
        rows = -(-n // level)
        pad = rows * level - n
        lo = np.concatenate([lo_key, np.full(pad, np.inf)]) if pad else lo_key
        hi = np.concatenate([hi_key, np.full(pad, -np.inf)]) if pad else hi_key
        base = np.arange(rows) * level
        # padding follows the block's points, so a first occurrence is always a stored point
        imin = base + lo.reshape(rows, level).argmin(axis=1)
        imax = base + hi.reshape(rows, level).argmax(axis=1)
        ilast = np.minimum(base + level - 1, n - 1)
        rec = np.empty(rows, RECORD)
        for name, idx in (("first", base), ("last", ilast), ("min", imin), ("max", imax)):
            rec[f"{name}_step"] = steps[idx]
            rec[f"{name}_value"] = values[idx]
            rec[f"{name}_wall"] = walls[idx]
        out[column(level)] = rec.tobytes()
    return out


def level_for(count: int, max_points: int) -> int | None:
    """The coarsest level whose blocks hold at most the average points of a bucket, or None when a
    bucket holds fewer points than the finest block (the points are read then)."""
    per_bucket = count / max(1, max_points // 4)
    fitting = [level for level in LEVELS if level <= per_bucket]
    return fitting[-1] if fitting else None


def decode_records(parts) -> np.ndarray:
    return np.frombuffer(b"".join(bytes(p) for p in parts), dtype=RECORD)


def m4_records(rec: np.ndarray, max_points: int, with_wall: bool) -> dict[str, np.ndarray]:
    """M4 (the rule in webapp.runs.downsample, edges snapped to block starts) of a series given as
    its step-ordered, non-overlapping block records."""
    width = bucket_width(rec["first_step"][0], rec["last_step"][-1], max_points)
    bucket = (rec["first_step"] - rec["first_step"][0]) // width
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(rec)] - 1
    counts = ends - starts + 1
    picked = [
        rec[starts][["first_step", "first_value", "first_wall"]],
        rec[ends][["last_step", "last_value", "last_wall"]],
    ]
    for name, reduce, fill in (("min", np.minimum, np.inf), ("max", np.maximum, -np.inf)):
        v = rec[f"{name}_value"]
        key = np.where(np.isnan(v), fill, v)
        extreme = reduce.reduceat(key, starts)
        hit = np.flatnonzero(key == np.repeat(extreme, counts))
        owner = np.searchsorted(starts, hit, side="right") - 1
        first = hit[np.r_[True, owner[1:] != owner[:-1]]]
        picked.append(rec[first][[f"{name}_step", f"{name}_value", f"{name}_wall"]])
    steps = np.concatenate([p[p.dtype.names[0]] for p in picked])
    values = np.concatenate([p[p.dtype.names[1]] for p in picked])
    steps, index = np.unique(steps, return_index=True)  # steps are unique in a series: same point
    entry = {"steps": steps, "values": values[index]}
    if with_wall:
        entry["walls"] = np.concatenate([p[p.dtype.names[2]] for p in picked])[index]
    return entry
