"""Writing and reading metric points (see MetricChunk for the storage layout).

Writes are idempotent per (run, key, step): a point whose step is already stored for that key is
skipped, so a retried API batch, a redelivered task or a resumed run never stores a point twice.
A batch is written in one transaction: all of it or none of it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
from django.db.models import BinaryField, Case, F, Value, When

from webapp.runs import summaries
from webapp.runs.downsample import m4
from webapp.runs.models import MetricChunk, MetricSeries
from webapp.runs.summaries import summarize, summarize_chunks

CHUNK = MetricChunk.CHUNK_POINTS
STEP = np.dtype("<i8")
FLOAT = np.dtype("<f8")


@dataclass
class Columns:
    """Points of one key, column-wise."""

    steps: np.ndarray
    values: np.ndarray
    walls: np.ndarray

    @classmethod
    def of(cls, steps, values, walls) -> Columns:
        return cls(
            np.asarray(steps, dtype=STEP), np.asarray(values, dtype=FLOAT), np.asarray(walls, dtype=FLOAT)
        )

    def take(self, index) -> Columns:
        return Columns(self.steps[index], self.values[index], self.walls[index])

    def __len__(self) -> int:
        return len(self.steps)


def decode(raw, dtype) -> np.ndarray:
    return np.frombuffer(bytes(raw) if isinstance(raw, memoryview) else raw, dtype=dtype)


def _chunk_fields(cols: Columns, summary: dict | None = None) -> dict:
    """A chunk's columns, its summaries included (every write of a chunk's points goes through here;
    ``summary``: summaries.summarize of these points, when the caller computed it already)."""
    return {
        "step_lo": int(cols.steps[0]),
        "step_hi": int(cols.steps[-1]),
        "n": len(cols),
        "steps": cols.steps.astype(STEP, copy=False).tobytes(),
        "values": cols.values.astype(FLOAT, copy=False).tobytes(),
        "walls": cols.walls.astype(FLOAT, copy=False).tobytes(),
        **(summary or summarize(cols.steps, cols.values, cols.walls)),
    }


def _lock_series(run_id: int, keys: list[str]) -> dict[str, MetricSeries]:
    """Get-or-create and row-lock the series of ``keys``, always in id order so that concurrent
    writers of overlapping key sets cannot deadlock."""

    postgresql = connection.vendor == "postgresql"

    def locked() -> dict[str, MetricSeries]:
        if postgresql:  # the same query without the ORM's compiling (a few ms a request)
            rows = [
                MetricSeries(
                    id=pk,
                    run_id=run_id,
                    key=key,
                    count=count,
                    last_step=last_step,
                    last_value=last_value,
                    min_value=min_value,
                    max_value=max_value,
                    tail_chunk_id=tail,
                )  # fmt: skip
                for pk, key, count, last_step, last_value, min_value, max_value, tail in fetch_sql(
                    "SELECT id, key, count, last_step, last_value, min_value, max_value, tail_chunk_id "
                    f'FROM "{MetricSeries._meta.db_table}" WHERE run_id = %s AND key = ANY(%s) '
                    "ORDER BY id FOR UPDATE",
                    [run_id, keys],
                )
            ]
        else:
            rows = MetricSeries.objects.select_for_update().filter(run_id=run_id, key__in=keys).order_by("id")
        return {s.key: s for s in rows}

    found = locked()
    missing = [k for k in keys if k not in found]
    if missing:
        MetricSeries.objects.bulk_create(
            [MetricSeries(run_id=run_id, key=k) for k in missing], ignore_conflicts=True
        )
        found = locked()
    # The tail chunks are read only now, holding the series locks. Joined into the locking query they
    # could come from before a concurrent writer's commit (PostgreSQL re-checks a row it waited for,
    # not the rows joined to it), and merging into that stale tail would drop that writer's points.
    tail_ids = [s.tail_chunk_id for s in found.values() if s.tail_chunk_id]
    tails = {}
    if tail_ids:  # the points only (no summaries), binary on PostgreSQL
        for pk, n, steps, values, walls in (
            fetch_sql(
                f'SELECT id, n, steps, "values", walls FROM "{MetricChunk._meta.db_table}" WHERE id = ANY(%s)',
                [tail_ids],
            )
            if postgresql
            else MetricChunk.objects.filter(pk__in=tail_ids).values_list(
                "id", "n", "steps", "values", "walls"
            )
        ):
            tails[pk] = MetricChunk(id=pk, n=n, steps=steps, values=values, walls=walls)
    for s in found.values():
        if s.tail_chunk_id:
            s.tail_chunk = tails[s.tail_chunk_id]
    return found


def _existing_steps(series: MetricSeries, lo: int, hi: int) -> np.ndarray:
    rows = MetricChunk.objects.filter(series=series, step_hi__gte=lo, step_lo__lte=hi).values_list(
        "steps", flat=True
    )
    parts = [decode(r, STEP) for r in rows]
    return np.concatenate(parts) if parts else np.empty(0, STEP)


def _write_series(
    series: MetricSeries, cols: Columns, new_chunks: list[MetricChunk], grown: list[tuple[int, dict]]
) -> int:
    order = np.argsort(cols.steps, kind="stable")
    cols = cols.take(order)
    first_of_step = np.r_[True, cols.steps[1:] != cols.steps[:-1]]  # a batch repeating a step keeps the first
    cols = cols.take(first_of_step)

    last = series.last_step
    if last is None:
        tail, late = cols, None
    else:
        is_new = cols.steps > last
        tail, late = cols.take(is_new), cols.take(~is_new)
        if len(late):
            known = _existing_steps(series, int(late.steps[0]), int(late.steps[-1]))
            late = late.take(~np.isin(late.steps, known))
            # Points that arrived out of order get chunks of their own; readers sort when chunks overlap.
            for start in range(0, len(late), MetricChunk.CHUNK_POINTS):
                part = late.take(slice(start, start + MetricChunk.CHUNK_POINTS))
                new_chunks.append(MetricChunk(series=series, **_chunk_fields(part)))

    written = len(tail) + (len(late) if late is not None else 0)
    if written == 0:
        return 0

    if len(tail):
        chunk = series.tail_chunk if series.tail_chunk_id else None
        grow = chunk is not None and chunk.n < CHUNK
        if grow:  # fill the tail chunk first: the points from its start on, cut into chunks
            tail_from_chunk = Columns(
                np.concatenate([decode(chunk.steps, STEP), tail.steps]),
                np.concatenate([decode(chunk.values, FLOAT), tail.values]),
                np.concatenate([decode(chunk.walls, FLOAT), tail.walls]),
            )
        else:
            tail_from_chunk = tail
        # every chunk's summaries in one call (a big sink flush writes many chunks a key)
        sums = summarize_chunks(tail_from_chunk.steps, tail_from_chunk.values, tail_from_chunk.walls)
        parts = [tail_from_chunk.take(slice(i * CHUNK, (i + 1) * CHUNK)) for i in range(len(sums))]
        if grow:  # written with the batch's other tail chunks (_store)
            grown.append((chunk.pk, _chunk_fields(parts[0], sums[0])))
            parts, sums = parts[1:], sums[1:]
        tail_parts = [
            MetricChunk(series=series, **_chunk_fields(part, summary))
            for part, summary in zip(parts, sums, strict=True)
        ]
        if tail_parts:
            new_chunks.extend(tail_parts)
            series._new_tail = tail_parts[-1]  # its id is known only after bulk_create
        series.last_step = int(tail.steps[-1])
        series.last_value = float(tail.values[-1])

    written_values = np.concatenate([tail.values] + ([late.values] if late is not None and len(late) else []))
    finite = written_values[np.isfinite(written_values)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        series.min_value = lo if series.min_value is None else min(series.min_value, lo)
        series.max_value = hi if series.max_value is None else max(series.max_value, hi)
    series.count += written
    return written


def metrics_record(run_id: int, batch: Mapping[str, Columns]) -> int:
    """Store ``batch`` (key -> points) for a run atomically. Returns the number of points written
    (points already stored are skipped, not counted)."""
    batch = {k: c for k, c in batch.items() if len(c)}
    if not batch:
        return 0
    with transaction.atomic():
        series_by_key = _lock_series(run_id, sorted(batch))
        new_chunks: list[MetricChunk] = []
        grown: list[tuple[int, dict]] = []
        touched: list[MetricSeries] = []
        written = 0
        for key, cols in batch.items():
            series = series_by_key[key]
            n = _write_series(series, cols, new_chunks, grown)
            if n:
                written += n
                touched.append(series)
        if touched:
            (_store_postgresql if connection.vendor == "postgresql" else _store_orm)(
                new_chunks, grown, touched
            )
    if written:
        from webapp.alerts import ingest as alerts_ingest

        alerts_ingest.points_written(run_id, batch)  # health rules (issue 15), after the commit
    return written


SERIES_FIELDS = ("count", "last_step", "last_value", "min_value", "max_value")
CHUNK_FIELDS = ("step_lo", "step_hi", "n", "steps", "values", "walls") + tuple(
    summaries.column(level) for level in summaries.LEVELS
)


def _store_orm(new_chunks: list[MetricChunk], grown: list[tuple[int, dict]], touched: list[MetricSeries]):
    """What a batch changes, through the ORM (SQLite)."""
    for pk, fields in grown:
        MetricChunk.objects.filter(pk=pk).update(**fields)
    if new_chunks:
        MetricChunk.objects.bulk_create(new_chunks)
    for series in touched:
        new_tail = getattr(series, "_new_tail", None)
        if new_tail is not None:
            series.tail_chunk_id = new_tail.pk
    MetricSeries.objects.bulk_update(touched, [*SERIES_FIELDS, "tail_chunk"])


def _store_postgresql(
    new_chunks: list[MetricChunk], grown: list[tuple[int, dict]], touched: list[MetricSeries]
) -> None:
    """What a batch changes in at most three statements whatever the number of keys: the grown tail
    chunks in one UPDATE, the new chunks in one INSERT, the series in one UPDATE, each from arrays
    (unnest) sent in binary (bytea as bytes, not hex text: the payloads are most of a request)."""
    chunk_table = MetricChunk._meta.db_table
    series_table = MetricSeries._meta.db_table
    types = {
        "step_lo": "bigint",
        "step_hi": "bigint",
        "n": "integer",
        **{name: "bytea" for name in CHUNK_FIELDS[3:]},
    }
    quoted = {f: f'"{f}"' for f in ("series_id", *CHUNK_FIELDS)}
    with raw_cursor() as cursor:
        if grown:
            sets = ", ".join(f"{quoted[f]} = v.{quoted[f]}" for f in CHUNK_FIELDS)
            arrays = ", ".join(f"%b::{types[f]}[]" for f in CHUNK_FIELDS)
            cursor.execute(
                f'UPDATE "{chunk_table}" AS c SET {sets} FROM unnest(%b::bigint[], {arrays}) '
                f"AS v(id, {', '.join(quoted[f] for f in CHUNK_FIELDS)}) WHERE c.id = v.id",
                [[pk for pk, _ in grown]] + [[fields[f] for _, fields in grown] for f in CHUNK_FIELDS],
            )
        if new_chunks:
            columns = ("series_id", *CHUNK_FIELDS)
            arrays = ", ".join(f"%b::{types.get(f, 'bigint')}[]" for f in columns)
            cursor.execute(
                f'INSERT INTO "{chunk_table}" ({", ".join(quoted[f] for f in columns)}) '
                f"SELECT * FROM unnest({arrays}) RETURNING id, series_id, step_lo",
                [[getattr(c, f) for c in new_chunks] for f in columns],
            )
            rows = cursor.fetchall()
            # a series' new tail is its new chunk with the greatest first step (its chunks of late
            # points all start at or before the series' last step, below every new tail part)
            tail_of: dict[int, tuple[int, int]] = {}
            for pk, sid, lo in rows:
                if sid not in tail_of or lo > tail_of[sid][1]:
                    tail_of[sid] = (pk, lo)
            for series in touched:
                if getattr(series, "_new_tail", None) is not None:
                    series.tail_chunk_id = tail_of[series.pk][0]
        cursor.execute(
            f'UPDATE "{series_table}" AS s SET count = v.count, last_step = v.last_step, '
            "last_value = v.last_value, min_value = v.min_value, max_value = v.max_value, "
            "tail_chunk_id = v.tail_chunk_id FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], "
            "%b::float8[], %b::float8[], %b::float8[], %b::bigint[]) "
            "AS v(id, count, last_step, last_value, min_value, max_value, tail_chunk_id) WHERE s.id = v.id",
            [
                [s.pk for s in touched],
                *([getattr(s, f) for s in touched] for f in SERIES_FIELDS),
                [s.tail_chunk_id for s in touched],
            ],
        )


def fetch_rows(queryset) -> list[tuple]:
    """Rows of a values_list queryset. On PostgreSQL the chunk payloads are fetched in binary: text
    format would ship bytea hex-encoded (twice the bytes, plus decoding), ~3x slower for 1M points."""
    if connection.vendor != "postgresql":
        return list(queryset)

    sql, params = queryset.query.sql_with_params()
    return fetch_sql(sql, params)


def raw_cursor():
    """A psycopg cursor on Django's connection (its transaction), binding parameters server-side:
    Django's cursors quote them into the SQL text in Python, which for arrays of thousands of values
    costs more than the statement (``%b`` sends a parameter in binary)."""
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def fetch_sql(sql: str, params) -> list[tuple]:
    """Rows of a PostgreSQL query, fetched in binary (see fetch_rows)."""
    with raw_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def series_read(
    run_ids: Iterable[int],
    keys: Iterable[str] | None = None,
    *,
    since_step: int | None = None,
    max_points: int | None = None,
    with_wall: bool = False,
) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """The one metric reader (the run page, the compare page, /api/runs/{id}/metrics/, /api/compare/
    and /api/compare/series/): ``{run_id: {key: {"steps": int64[], "values": float64[] (, "walls")}}}``
    in step order; a series without points (after ``since_step``) is left out.

    ``since_step`` returns only points after it (the live-chart cursor); ``max_points`` downsamples
    each series with M4 (the rule in webapp.runs.downsample), from the summaries of
    webapp.runs.summaries when the series is long, so the read costs O(max_points) whatever the
    series' length."""
    run_ids = list(run_ids)
    series = MetricSeries.objects.filter(run_id__in=run_ids)
    if keys is not None:
        series = series.filter(key__in=list(keys))
    rows = list(series.values_list("id", "run_id", "key", "count"))
    out: dict[int, dict[str, dict[str, np.ndarray]]] = {rid: {} for rid in run_ids}
    for (run_id, key), entry in read_series(
        rows, since_step=since_step, max_points=max_points, with_wall=with_wall
    ).items():
        out[run_id][key] = entry
    return out


def read_series(
    rows: Iterable[tuple[int, int, str, int]],
    *,
    since_step: int | None = None,
    max_points: int | None = None,
    with_wall: bool = False,
) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """series_read for MetricSeries rows ``(id, run_id, key, count)``: ``{(run_id, key): entry}``.
    Long series read at ``max_points`` (and no ``since_step``) come from their chunks' summaries,
    the others from their points."""
    names = {sid: (run_id, key) for sid, run_id, key, _ in rows}
    out: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    by_level: dict[int, list[int]] = {}
    points: list[int] = []
    for sid, _, _, count in rows:
        level = None
        if max_points is not None and since_step is None and count > max_points:
            level = summaries.level_for(count, max_points)
        (by_level.setdefault(level, []) if level else points).append(sid)
    for level, ids in by_level.items():
        read = _read_summaries_postgresql if connection.vendor == "postgresql" else _read_summaries_orm
        found, blocks, lengths = read(ids, level, with_wall)
        # every series of a level in one M4 pass (summaries.m4_many)
        if found:
            for sid, entry in zip(
                found, summaries.m4_many(blocks, lengths, max_points, with_wall), strict=True
            ):
                out[names[sid]] = entry
        read_ok = set(found)
        points.extend(sid for sid in ids if sid not in read_ok)  # overlapping chunks: points out of order
    if points:
        for sid, entry in _read_points(points, since_step, max_points, with_wall).items():
            out[names[sid]] = entry
    return out


def _read_summaries_orm(
    ids: list[int], level: int, with_wall: bool
) -> tuple[list[int], summaries.Blocks | None, np.ndarray]:
    """The summary records (summaries.Blocks) at ``level`` of the series in ``ids`` that can be read
    from summaries, one series after the other in step order: (their ids, the records, records per
    series). A series whose chunks overlap is left out (its points are read instead). A chunk
    without summaries at this level (a partial tail at level 64, a chunk written before the
    summaries existed or spanning too many steps) ships its points, summarized here."""
    column = summaries.column(level)
    missing = {f"{column}__isnull": True}
    points_if_missing = [
        Case(When(**missing, then=F(name)), default=Value(None), output_field=BinaryField())
        for name in ("steps", "values", "walls")
    ]
    chunks = MetricChunk.objects.filter(series_id__in=ids).order_by("series_id", "step_lo")
    grouped: dict[int, list[tuple]] = {}
    for row in fetch_rows(
        chunks.annotate(
            _s=points_if_missing[0], _v=points_if_missing[1], _w=points_if_missing[2]
        ).values_list("series_id", "step_lo", "step_hi", column, "_s", "_v", "_w")
    ):
        grouped.setdefault(row[0], []).append(row[1:])
    found, parts, lengths = [], [], []
    for sid, chunk_rows in grouped.items():
        if any(chunk_rows[i][0] <= chunk_rows[i - 1][1] for i in range(1, len(chunk_rows))):
            continue
        blocks = summaries.Blocks.concat(
            [
                summaries.decode_values([bytes(p[2])], [p[0]])
                if p[2] is not None
                else summaries.summarize_all(
                    decode(p[3], STEP), decode(p[4], FLOAT), decode(p[5], FLOAT), level
                )
                for p in chunk_rows
            ]
        )
        found.append(sid)
        parts.append(blocks)
        lengths.append(len(blocks))
    return found, (summaries.Blocks.concat(parts) if parts else None), np.array(lengths, dtype=np.int64)


# a chunk's entry in _read_summaries_postgresql: its first and last step and its records at the level
CHUNK_META = np.dtype([("lo", ">i8"), ("hi", ">i8"), ("n", ">i4")])


def _read_summaries_postgresql(
    ids: list[int], level: int, with_wall: bool
) -> tuple[list[int], summaries.Blocks | None, np.ndarray]:
    """_read_summaries_orm in one row a series, decoded for all series at once: PostgreSQL
    concatenates the MAIN parts of a series' summaries in step order (string_agg of a substring: the
    walls part only when asked for) and returns the chunks' first steps, last steps and record counts
    as big-endian bytes (CHUNK_META: numpy decodes every series' chunks in one call; a bigint[] is
    parsed element by element, and fewer aggregates cost PostgreSQL less). The chunks without
    summaries at this level (string_agg skips them) are fetched with their points in a second query,
    only when there are any; their records are merged in by step."""
    col = f'"{summaries.column(level)}"'
    table = f'"{MetricChunk._meta.db_table}"'
    main_len = f"(length({col}) / {summaries.RECORD_BYTES} * {summaries.MAIN.itemsize})"
    walls = (
        f"string_agg(substring({col} from {main_len} + 1), ''::bytea ORDER BY step_lo)"
        if with_wall
        else "NULL"
    )
    meta = f"int8send(step_lo) || int8send(step_hi) || int4send(coalesce(length({col}), 0) / {summaries.RECORD_BYTES})"
    rows = fetch_sql(
        f"SELECT series_id, string_agg(substring({col} from 1 for {main_len}), ''::bytea ORDER BY step_lo), "
        f"{walls}, string_agg({meta}, ''::bytea ORDER BY step_lo) "
        f"FROM {table} WHERE series_id = ANY(%s) GROUP BY series_id",
        [ids],
    )
    # one numpy pass over every chunk of every series: (first step, last step, records) each
    chunks = np.frombuffer(b"".join(r[3] for r in rows), dtype=CHUNK_META)
    position = np.repeat(np.arange(len(rows)), [len(r[3]) // CHUNK_META.itemsize for r in rows])
    same = position[1:] == position[:-1]
    overlapping = set(position[1:][same & (chunks["lo"][1:] <= chunks["hi"][:-1])].tolist())
    if overlapping:  # points that arrived out of order: these series are read from their points
        keep = ~np.isin(position, list(overlapping))
        rows = [r for i, r in enumerate(rows) if i not in overlapping]
        chunks, position = (
            chunks[keep],
            np.repeat(np.arange(len(rows)), [len(r[3]) // CHUNK_META.itemsize for r in rows]),
        )
    if not rows:
        return [], None, np.empty(0, dtype=np.int64)
    found = [r[0] for r in rows]
    incomplete = np.unique(position[chunks["n"] == 0]).tolist()  # positions in found
    blocks = summaries.decode(
        b"".join(r[1] or b"" for r in rows),
        chunks["lo"],
        chunks["n"],
        b"".join(r[2] or b"" for r in rows) if with_wall else None,
    )
    lengths = np.array([len(r[1] or b"") // summaries.MAIN.itemsize for r in rows], dtype=np.int64)
    if not incomplete:
        return found, blocks, lengths
    # rare (a partial tail at level 64, chunks from before the summaries): the chunks without this
    # level ship their points, summarized here and merged into their series by step
    extra: dict[int, list[summaries.Blocks]] = {}
    for sid, steps, values, walls in fetch_sql(
        f'SELECT series_id, steps, "values", walls FROM {table} WHERE series_id = ANY(%s) AND {col} IS NULL',
        [[found[i] for i in incomplete]],
    ):
        extra.setdefault(sid, []).append(
            summaries.summarize_all(decode(steps, STEP), decode(values, FLOAT), decode(walls, FLOAT), level)
        )
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    merged = []
    for i in incomplete:
        part = summaries.Blocks.concat(
            [blocks.take(slice(starts[i], starts[i] + lengths[i])), *extra[found[i]]]
        )
        merged.append(part.take(np.argsort(part.steps[:, 0], kind="stable")))
    keep = ~np.isin(np.repeat(np.arange(len(found)), lengths), incomplete)
    others = sorted(set(range(len(found))) - set(incomplete))
    blocks = summaries.Blocks.concat([blocks.take(keep), *merged])
    if not with_wall:
        blocks.walls = None
    return (
        [found[i] for i in others] + [found[i] for i in incomplete],
        blocks,
        np.concatenate([lengths[others], [len(m) for m in merged]]).astype(np.int64),
    )


def _read_points(
    series_ids: list[int], since_step: int | None, max_points: int | None, with_wall: bool
) -> dict[int, dict[str, np.ndarray]]:
    """The points of the series (by id), finished by finish_series. A chunk whose steps are
    contiguous (step_hi - step_lo + 1 == n: strictly increasing integers can only fill the range
    exactly) does not ship its steps: they are rebuilt with arange (half the bytes for metrics
    logged at every step, the common case)."""
    chunks = MetricChunk.objects.filter(series_id__in=series_ids)
    if since_step is not None:
        chunks = chunks.filter(step_hi__gt=since_step)
    steps_or_null = Case(
        When(step_hi=F("step_lo") + F("n") - 1, then=Value(None, output_field=BinaryField())),
        default=F("steps"),
        output_field=BinaryField(),
    )
    fields = ["series_id", "step_lo", "n", "_steps", "values"] + (["walls"] if with_wall else [])
    grouped: dict[int, list[tuple]] = {}
    for row in fetch_rows(
        chunks.annotate(_steps=steps_or_null).order_by("series_id", "step_lo").values_list(*fields)
    ):
        grouped.setdefault(row[0], []).append(row[1:])
    out = {}
    for sid, parts in grouped.items():
        steps = np.concatenate(
            [np.arange(p[0], p[0] + p[1], dtype=STEP) if p[2] is None else decode(p[2], STEP) for p in parts]
        )
        values = np.concatenate([decode(p[3], FLOAT) for p in parts])
        walls = np.concatenate([decode(p[4], FLOAT) for p in parts]) if with_wall else None
        out[sid] = finish_series(steps, values, walls, since_step=since_step, max_points=max_points)
    return out


def finish_series(steps, values, walls, *, since_step, max_points) -> dict[str, np.ndarray]:
    """Decoded chunk columns of one series -> what readers return: step-sorted (out-of-order chunks
    interleave), cut after ``since_step``, downsampled to ``max_points`` (exact M4)."""
    if len(steps) > 1 and np.any(steps[1:] <= steps[:-1]):
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
        walls = walls[order] if walls is not None else None
    if since_step is not None:
        keep = steps > since_step
        steps, values = steps[keep], values[keep]
        walls = walls[keep] if walls is not None else None
    if max_points is not None and len(steps) > max_points:
        idx = m4(steps, values, max_points)
        steps, values = steps[idx], values[idx]
        walls = walls[idx] if walls is not None else None
    entry = {"steps": steps, "values": values}
    if walls is not None:
        entry["walls"] = walls
    return entry


def metrics_truncate_after(run_id: int, step: int) -> int:
    """Remove every point of the run with a step after ``step`` (a resumed attempt redoes those steps
    from its checkpoint: its points replace them). The series' aggregates are recomputed from what
    stays. Returns the number of points removed. Runs in the caller's transaction when there is one."""
    removed = 0
    with transaction.atomic():
        series = list(MetricSeries.objects.select_for_update().filter(run_id=run_id).order_by("id"))
        for s in series:
            chunks = list(MetricChunk.objects.filter(series=s, step_hi__gt=step))
            if not chunks:
                continue
            for chunk in chunks:
                steps = decode(chunk.steps, STEP)
                keep = steps <= step
                removed += int((~keep).sum())
                if not keep.any():
                    chunk.delete()
                    continue
                cols = Columns(steps, decode(chunk.values, FLOAT), decode(chunk.walls, FLOAT)).take(keep)
                MetricChunk.objects.filter(pk=chunk.pk).update(**_chunk_fields(cols))
            _recompute_aggregates(s)
    return removed


def _recompute_aggregates(series: MetricSeries) -> None:
    """count, last, min, max and the tail chunk of a series from its chunks (after points were
    removed; reads the whole series, which a resume can afford)."""
    rows = list(
        MetricChunk.objects.filter(series=series)
        .order_by("step_hi", "id")
        .values_list("id", "steps", "values")
    )
    if not rows:
        MetricSeries.objects.filter(pk=series.pk).update(
            count=0, last_step=None, last_value=None, min_value=None, max_value=None, tail_chunk=None
        )
        return
    steps = np.concatenate([decode(r[1], STEP) for r in rows])
    values = np.concatenate([decode(r[2], FLOAT) for r in rows])
    last = int(np.argmax(steps))
    finite = values[np.isfinite(values)]
    MetricSeries.objects.filter(pk=series.pk).update(
        count=len(steps),
        last_step=int(steps[last]),
        last_value=float(values[last]),
        min_value=float(finite.min()) if finite.size else None,
        max_value=float(finite.max()) if finite.size else None,
        # new in-order points append to the chunk holding the last step (its steps all precede them)
        tail_chunk_id=rows[-1][0],
    )
