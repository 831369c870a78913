"""Summaries of stored metric points, kept on write, so that a downsampled read costs O(max_points).

Every MetricChunk (up to 4,096 points) carries, next to its points, one summary column per level:
``summary_64``, ``summary_256``, ``summary_1024`` and ``summary_4096``. Level L cuts the chunk into
blocks of L consecutive points (the last one may be shorter) and stores one record per block:
its first, last, minimum and maximum point, each as (step, value, wall) (the byte layout: MAIN and
WALLS below). They are computed by
``summarize`` whenever a chunk's points are written (metric_store._chunk_fields: new chunks, the
tail chunk that live appends grow, truncation), so they are never stale.

A read at ``max_points`` with B = max_points // 4 buckets picks the coarsest level whose blocks hold
no more points than a bucket does on average (count / B), so it reads between B and 4 B records per
series (48 bytes each without walls) up to 4,096 x max_points points (8 M at max_points 2,000); beyond that it
reads one record per chunk (count / 4,096): a 10,000,000-point series at max_points 2,000 reads
2,442 records (117 kB) instead of 240 MB of points. (A level over groups of chunks would keep
longer series at O(max_points) too; not built yet.) ``m4_many`` then applies the M4
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
point by point (exact M4, no snapping), and so are the chunks that span 2^32 steps or more (their
step offsets do not fit: they get no summaries and ship their points)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = (64, 256, 1024, 4096)  # points per block; 4096 = MetricChunk.CHUNK_POINTS: one record a chunk
FULL_CHUNKS_ONLY = (64,)  # levels a chunk gets only once it is full (see summarize_chunks)

# A summary column value holds the R records of its chunk at one level in two parts: first R x MAIN
# (the steps of the block's first, last, min and max point as offsets from the chunk's first step,
# then their values), then R x WALLS (their wall times). Readers that do not ask for walls (charts,
# the compare page) fetch only the MAIN part of each value (SQL substring, see metric_store). 80 bytes
# a record instead of 12 x 8 also keeps a chunk's row small enough that PostgreSQL stores its
# level-256-and-coarser summaries inline and uncompressed: a 100-runs x 10-keys compare read
# decompressed 25,000 pglz values before.
MAIN = np.dtype([("offsets", "<u4", (4,)), ("values", "<f8", (4,))])
WALLS = np.dtype(("<f8", (4,)))
RECORD_BYTES = MAIN.itemsize + WALLS.itemsize
MAX_SPAN = 2**32 - 1  # a chunk spanning more steps than this gets no summaries (its points are read)


def column(level: int) -> str:
    return f"summary_{level}"


@dataclass
class Blocks:
    """Block records of one or more series, step-ordered within each series: ``steps`` and
    ``values`` are (records, 4) arrays of the block's first, last, min and max point; ``walls`` the
    same or None when not read."""

    steps: np.ndarray
    values: np.ndarray
    walls: np.ndarray | None

    def __len__(self) -> int:
        return len(self.steps)

    @classmethod
    def concat(cls, parts: list[Blocks]) -> Blocks:
        walls = None if any(p.walls is None for p in parts) else np.concatenate([p.walls for p in parts])
        return cls(np.concatenate([p.steps for p in parts]), np.concatenate([p.values for p in parts]), walls)

    def take(self, index) -> Blocks:
        return Blocks(
            self.steps[index], self.values[index], None if self.walls is None else self.walls[index]
        )


def summarize(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> dict[str, bytes | None]:
    """``{column: bytes}`` of the summary records of one chunk's points (step-sorted), every level
    (None for the levels of FULL_CHUNKS_ONLY when the chunk is not full)."""
    return summarize_chunks(steps, values, walls)[0]


def summarize_all(steps: np.ndarray, values: np.ndarray, walls: np.ndarray, level: int) -> Blocks:
    """The records of one chunk's points at ``level``, whether the chunk is full or not and whatever
    its span (readers summarizing the points of a chunk that has no summary at that level)."""
    n = len(steps)
    lo, hi = _extreme_keys(values, n, level)
    idx = _block_points(lo, hi, n, level, -(-n // level))
    return Blocks(steps[idx], values.astype("<f8", copy=False)[idx], walls.astype("<f8", copy=False)[idx])


def summarize_chunks(
    steps: np.ndarray, values: np.ndarray, walls: np.ndarray
) -> list[dict[str, bytes | None]]:
    """summarize for consecutive chunks at once: the points of chunk i are ``[4096 i, 4096 (i + 1))``
    (only the last may be shorter). Written for few numpy calls whatever the number of chunks (it
    runs on every write of a chunk, live appends included)."""
    n = len(steps)
    top = LEVELS[-1]
    n_chunks = max(1, -(-n // top))
    lo, hi = _extreme_keys(values, n, top)
    full = n // top * top  # points of the full chunks
    picks, chunk_of, counts = [], [], []
    for level in LEVELS:
        # the finest level is kept for full chunks only: a tail chunk that live appends rewrite
        # again and again skips its biggest summary (readers summarize its points instead)
        rows = -(-(full if level in FULL_CHUNKS_ONLY else n) // level)
        picks.append(_block_points(lo, hi, n, level, rows))
        chunk_of.append(np.arange(rows) // (top // level))
        counts.append(rows)
    idx = np.concatenate(picks)  # (records, 4): first, last, min, max
    chunk_first = steps[np.arange(n_chunks) * top]
    span = steps[np.minimum(np.arange(1, n_chunks + 1) * top, n) - 1] - chunk_first
    main = np.empty(len(idx), MAIN)
    main["offsets"] = steps[idx] - chunk_first[np.concatenate(chunk_of)][:, None]
    main["values"] = values.astype("<f8", copy=False)[idx]
    wall = walls.astype("<f8", copy=False)[idx]
    out: list[dict[str, bytes | None]] = [{} for _ in range(n_chunks)]
    start = 0
    for level, rows in zip(LEVELS, counts, strict=True):
        per_chunk = top // level
        for i, chunk in enumerate(out):
            lo_row = start + i * per_chunk
            hi_row = min(lo_row + per_chunk, start + rows)
            fits = hi_row > lo_row and span[i] <= MAX_SPAN
            chunk[column(level)] = (
                main[lo_row:hi_row].tobytes() + wall[lo_row:hi_row].tobytes() if fits else None
            )
        start += rows
    return out


def _extreme_keys(values: np.ndarray, n: int, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys for a block's minimum and maximum (NaN never wins), padded to a multiple of ``multiple``
    after the points, so that a block's first occurrence of its extreme is a stored point."""
    size = max(1, -(-n // multiple)) * multiple
    nan = np.isnan(values)
    lo = np.full(size, np.inf)
    lo[:n] = np.where(nan, np.inf, values)
    hi = np.full(size, -np.inf)
    hi[:n] = np.where(nan, -np.inf, values)
    return lo, hi


def _block_points(lo: np.ndarray, hi: np.ndarray, n: int, level: int, rows: int) -> np.ndarray:
    """(rows, 4) indices of the first, last, min and max point of the first ``rows`` blocks."""
    base = np.arange(0, rows * level, level)
    return np.stack(
        [
            base,
            np.minimum(base + level - 1, n - 1),
            base + lo[: rows * level].reshape(-1, level).argmin(axis=1),
            base + hi[: rows * level].reshape(-1, level).argmax(axis=1),
        ],
        axis=1,
    )


def level_for(count: int, max_points: int) -> int | None:
    """The coarsest level whose blocks hold at most the average points of a bucket, or None when a
    bucket holds fewer points than the finest block (the points are read then)."""
    per_bucket = count / max(1, max_points // 4)
    fitting = [level for level in LEVELS if level <= per_bucket]
    return fitting[-1] if fitting else None


def decode(main: bytes, chunk_first: np.ndarray, records: np.ndarray, walls: bytes | None = None) -> Blocks:
    """Blocks of the MAIN parts of consecutive summary values (``main``, concatenated), whose chunks
    start at steps ``chunk_first`` and hold ``records`` records each; ``walls``: their WALLS parts,
    concatenated the same way, or None."""
    parts = np.frombuffer(main, dtype=MAIN)
    steps = parts["offsets"].astype(np.int64) + np.repeat(np.asarray(chunk_first, np.int64), records)[:, None]
    return Blocks(
        steps, parts["values"], None if walls is None else np.frombuffer(walls, dtype=WALLS).reshape(-1, 4)
    )


def decode_values(values: list[bytes], chunk_first: list[int]) -> Blocks:
    """Blocks of whole summary column values (MAIN part then WALLS part each) of chunks starting at
    ``chunk_first``."""
    records = np.array([len(v) // RECORD_BYTES for v in values], dtype=np.int64)
    cut = records * MAIN.itemsize
    return decode(
        b"".join(bytes(v[:c]) for v, c in zip(values, cut, strict=True)),
        np.asarray(chunk_first, np.int64),
        records,
        b"".join(bytes(v[c:]) for v, c in zip(values, cut, strict=True)),
    )


def m4_records(blocks: Blocks, max_points: int, with_wall: bool) -> dict[str, np.ndarray]:
    """m4_many of one series."""
    return m4_many(blocks, np.array([len(blocks)]), max_points, with_wall)[0]


def m4_many(
    blocks: Blocks, lengths: np.ndarray, max_points: int, with_wall: bool
) -> list[dict[str, np.ndarray]]:
    """M4 (the rule in webapp.runs.downsample, edges snapped to block starts) of several series at
    once: ``blocks`` holds their records one series after the other (``lengths`` records each,
    step-ordered and non-overlapping within a series). One pass of numpy calls whatever the number of
    series: a compare of 1,000 series spent more time in per-series calls than in its records."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n_series = len(lengths)
    seg_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    seg = np.repeat(np.arange(n_series), lengths)
    S, V = blocks.steps, blocks.values
    first = S[seg_start, 0]
    n_buckets = max(1, max_points // 4)
    width = np.maximum(1, -(-(S[seg_start + lengths - 1, 1] - first + 1) // n_buckets))
    bucket = (S[:, 0] - first[seg]) // width[seg]
    change = np.empty(len(S), dtype=bool)
    change[:1] = True
    change[1:] = (bucket[1:] != bucket[:-1]) | (seg[1:] != seg[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(S)) - 1
    counts = ends - starts + 1
    extremes = []
    for col, reduce, fill in ((2, np.minimum, np.inf), (3, np.maximum, -np.inf)):
        v = V[:, col]
        key = np.where(np.isnan(v), fill, v)
        extreme = reduce.reduceat(key, starts)
        hit = np.flatnonzero(key == np.repeat(extreme, counts))  # NaN-free keys: every bucket has one
        owner = np.searchsorted(starts, hit, side="right") - 1
        extremes.append(hit[_first_of_runs(owner)])  # a bucket's first occurrence
    lo_row, hi_row = extremes
    # per bucket: first <= min/max in step order <= last, so the flattened (buckets, 4) table is in
    # step order already; a point picked twice (a first that is also the minimum) is kept once
    swap = S[lo_row, 2] > S[hi_row, 3]
    rows = np.stack([starts, np.where(swap, hi_row, lo_row), np.where(swap, lo_row, hi_row), ends], axis=1)
    cols = np.stack(
        [np.zeros_like(swap), np.where(swap, 3, 2), np.where(swap, 2, 3), np.ones_like(swap)], axis=1
    )
    rows, cols = rows.astype(np.int64).ravel(), cols.astype(np.int64).ravel()
    steps = S[rows, cols]
    owner = seg[rows]
    keep = np.empty(len(steps), dtype=bool)
    keep[:1] = True
    keep[1:] = (steps[1:] != steps[:-1]) | (owner[1:] != owner[:-1])
    rows, cols, steps = rows[keep], cols[keep], steps[keep]
    values = V[rows, cols]
    walls = blocks.walls[rows, cols] if with_wall else None
    bounds = np.cumsum(np.bincount(owner[keep], minlength=n_series))[:-1]
    out = [
        {"steps": s, "values": v}
        for s, v in zip(np.split(steps, bounds), np.split(values, bounds), strict=True)
    ]
    if with_wall:
        for entry, w in zip(out, np.split(walls, bounds), strict=True):
            entry["walls"] = w
    return out


def _first_of_runs(a: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in ``a`` (np.r_ costs ~25 us a call)."""
    change = np.empty(len(a), dtype=bool)
    change[:1] = True
    np.not_equal(a[1:], a[:-1], out=change[1:])
    return np.flatnonzero(change)
