"""Summaries of stored metric points, kept on write, so that a downsampled read costs O(max_points).

Every MetricChunk (up to 4,096 points) carries, next to its points, one summary column per level:
``summary_64``, ``summary_256``, ``summary_1024`` and ``summary_4096``. Level L cuts the chunk into
blocks of L consecutive points (the last one may be shorter) and stores one ``RECORD`` per block:
its first, last, minimum and maximum point, each as (step, value, wall). They are computed by
``summarize`` whenever a chunk's points are written (metric_store._chunk_fields: new chunks, the
tail chunk that live appends grow, truncation), so they are never stale.

A read at ``max_points`` with B = max_points // 4 buckets picks the coarsest level whose blocks hold
no more points than a bucket does on average (count / B), so it reads between B and 4 B records per
series (96 bytes each) up to 4,096 x max_points points (8 M at max_points 2,000); beyond that it
reads one record per chunk (count / 4,096): a 10,000,000-point series at max_points 2,000 reads
2,442 records (234 kB) instead of 240 MB of points. (A level over groups of chunks would keep
longer series at O(max_points) too; not built yet.) ``m4_records`` then applies the M4
rule of webapp.runs.downsample to the blocks: a block belongs to the bucket of its first step
(edges snap to block starts), a bucket's minimum is the minimum of its blocks' minima (exact), the
same for the maximum, and its first and last points are its first block's first and its last
block's last point. The answer equals exact M4 (m4_buckets) over the same snapped buckets; the
tests hold the two to each other on random series.

The finest level (64) is written only for full chunks: the tail chunk, which live appends rewrite
at every flush, skips its biggest summary, so a write costs about what it did before. A chunk
without the summaries a read needs (that tail at level 64, or a chunk written before the summaries
existed, which the 0010 migration fills in) ships its points instead and is summarized by the
reader: at most one partial chunk per series in the normal case. Series with fewer than 64 points
per bucket and series whose chunks overlap in steps (points that arrived out of order) are read
point by point (exact M4, no snapping)."""

from __future__ import annotations

import numpy as np

from webapp.runs.downsample import bucket_width

LEVELS = (64, 256, 1024, 4096)
FULL_CHUNKS_ONLY = (
    64,
)  # levels a chunk gets only once it is full (see summarize_chunks)  # points per block; 4096 = MetricChunk.CHUNK_POINTS: one record a chunk

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


def summarize(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> dict[str, bytes | None]:
    """``{column: bytes}`` of the summary records of one chunk's points (step-sorted), every level
    (None for the levels of FULL_CHUNKS_ONLY when the chunk is not full)."""
    return summarize_chunks(steps, values, walls)[0]


def summarize_all(steps: np.ndarray, values: np.ndarray, walls: np.ndarray, level: int) -> bytes:
    """The records of one chunk's points at ``level``, whether the chunk is full or not (readers)."""
    return summarize_chunks(steps, values, walls, every_level=True)[0][column(level)]


def summarize_chunks(
    steps: np.ndarray, values: np.ndarray, walls: np.ndarray, every_level: bool = False
) -> list[dict[str, bytes | None]]:
    """summarize for consecutive chunks at once: the points of chunk i are ``[4096 i, 4096 (i + 1))``
    (only the last may be shorter). Written for few numpy calls whatever the number of chunks (it
    runs on every write of a chunk, live appends included)."""
    n = len(steps)
    top = LEVELS[-1]
    n_chunks = max(1, -(-n // top))
    size = n_chunks * top
    nan = np.isnan(values)
    # padding follows the points, so a block's first occurrence of its extreme is a stored point
    lo = np.full(size, np.inf)
    lo[:n] = np.where(nan, np.inf, values)
    hi = np.full(size, -np.inf)
    hi[:n] = np.where(nan, -np.inf, values)
    full = n // top * top  # points of the full chunks
    picks, counts = [], []
    for level in LEVELS:
        # the finest level is kept for full chunks only: a tail chunk that live appends rewrite
        # again and again skips its biggest summary (readers summarize its points instead)
        rows = -(-(full if level in FULL_CHUNKS_ONLY and not every_level else n) // level)
        base = np.arange(0, rows * level, level)
        picks.append(
            np.stack(
                [
                    base,
                    np.minimum(base + level - 1, n - 1),
                    base + lo.reshape(-1, level)[:rows].argmin(axis=1),
                    base + hi.reshape(-1, level)[:rows].argmax(axis=1),
                ],
                axis=1,
            )
        )
        counts.append(rows)
    idx = np.concatenate(picks)  # (records, 4): first, last, min, max
    table = np.empty((len(idx), 12), dtype="<i8")  # the RECORD layout
    table[:, 0:4] = steps[idx]
    table[:, 4:8] = values.astype("<f8", copy=False)[idx].view("<i8")
    table[:, 8:12] = walls.astype("<f8", copy=False)[idx].view("<i8")
    out: list[dict[str, bytes | None]] = [{} for _ in range(n_chunks)]
    start = 0
    for level, rows in zip(LEVELS, counts, strict=True):
        per_chunk = top // level
        for i, chunk in enumerate(out):
            lo_row = start + i * per_chunk
            hi_row = min(lo_row + per_chunk, start + rows)
            chunk[column(level)] = table[lo_row:hi_row].tobytes() if hi_row > lo_row else None
        start += rows
    return out


def level_for(count: int, max_points: int) -> int | None:
    """The coarsest level whose blocks hold at most the average points of a bucket, or None when a
    bucket holds fewer points than the finest block (the points are read then)."""
    per_bucket = count / max(1, max_points // 4)
    fitting = [level for level in LEVELS if level <= per_bucket]
    return fitting[-1] if fitting else None


def decode_records(parts) -> np.ndarray:
    """The records of summary column values, as an (records, 12) int64 array in the RECORD layout
    (columns 0-3 steps, 4-7 values' bits, 8-11 walls' bits: first, last, min, max)."""
    return np.frombuffer(b"".join(parts), dtype="<i8").reshape(-1, 12)


def m4_records(table: np.ndarray, max_points: int, with_wall: bool) -> dict[str, np.ndarray]:
    """M4 (the rule in webapp.runs.downsample, edges snapped to block starts) of a series given as
    its step-ordered, non-overlapping block records (decode_records)."""
    first_steps = table[:, 0]
    width = bucket_width(first_steps[0], table[-1, 1], max_points)
    bucket = (first_steps - first_steps[0]) // width
    starts = _first_of_runs(bucket)
    ends = np.append(starts[1:], len(table)) - 1
    counts = ends - starts + 1
    rows, cols = [starts, ends], [0, 1]
    for col, reduce, fill in ((2, np.minimum, np.inf), (3, np.maximum, -np.inf)):
        v = table[:, 4 + col].view("<f8")
        key = np.where(np.isnan(v), fill, v)
        extreme = reduce.reduceat(key, starts)
        hit = np.flatnonzero(key == np.repeat(extreme, counts))
        owner = np.searchsorted(starts, hit, side="right") - 1
        rows.append(hit[_first_of_runs(owner)])
        cols.append(col)
    row = np.concatenate(rows)
    col = np.concatenate([np.full(len(r), c) for r, c in zip(rows, cols, strict=True)])
    # steps are unique in a series: one step is one point (a bucket's first may also be its min)
    steps, index = np.unique(table[row, col], return_index=True)
    row, col = row[index], col[index]
    entry = {"steps": steps, "values": table[row, col + 4].view("<f8")}
    if with_wall:
        entry["walls"] = table[row, col + 8].view("<f8")
    return entry


def _first_of_runs(a: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in ``a`` (np.r_ costs ~25 us a call)."""
    change = np.empty(len(a), dtype=bool)
    change[:1] = True
    np.not_equal(a[1:], a[:-1], out=change[1:])
    return np.flatnonzero(change)
