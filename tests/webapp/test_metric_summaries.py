"""The one metric reader: downsampled reads from the chunks' summaries equal exact M4 under the rule of
webapp.runs.downsample (edges snap to summary blocks; minima, maxima, first and last points exact),
on seeded random series, through live appends, out-of-order points and chunks without summaries."""

import importlib

import numpy as np
import pytest
from django.apps import apps as django_apps

from webapp.runs import summaries, table
from webapp.runs.downsample import bucket_width, m4, m4_buckets
from webapp.runs.metric_store import Columns, metrics_record, metrics_truncate_after, series_read
from webapp.runs.models import MetricChunk, MetricSeries, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(project, alice):
    return Run.objects.create(project=project, name="r", kind="external", status="running", created_by=alice)


def random_series(rng, n: int, shape: str):
    if shape == "contiguous":
        steps = np.arange(n) + int(rng.integers(0, 1000))
    elif shape == "strided":
        steps = np.arange(n) * int(rng.integers(2, 7))
    else:  # gaps of any size, a long hole in the middle
        steps = np.cumsum(rng.integers(1, 20, size=n))
        steps[n // 2 :] += 10**6
    values = rng.standard_normal(n)
    values[rng.integers(0, n, size=n // 20)] = np.nan
    values[rng.integers(0, n, size=3)] = rng.choice([np.inf, -np.inf, 40.0, -40.0], size=3)
    if rng.random() < 0.3:
        values = np.round(values, 1)  # ties
    if rng.random() < 0.3:
        values[: n // 3] = np.nan  # buckets of only NaN
    walls = 1.7e9 + rng.random(n).cumsum()
    return steps.astype(np.int64), values, walls


def record_in_batches(rng, run_id, key, steps, values, walls):
    lo = 0
    while lo < len(steps):
        hi = lo + int(rng.integers(1, 30_000))
        metrics_record(run_id, {key: Columns.of(steps[lo:hi], values[lo:hi], walls[lo:hi])})
        lo = hi


def exact_snapped(series_id, steps, values, walls, max_points):
    """Exact M4 of the stored points over the buckets the rule allows the summaries to use: each
    summary block (L points of a chunk) in the bucket of its first step."""
    level = summaries.level_for(len(steps), max_points)
    assert level is not None
    sizes = list(
        MetricChunk.objects.filter(series_id=series_id).order_by("step_lo").values_list("n", flat=True)
    )
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    block_starts = np.concatenate(
        [off + np.arange(0, n, level) for off, n in zip(offsets, sizes, strict=True)]
    )
    block_of = block_starts[np.searchsorted(block_starts, np.arange(len(steps)), side="right") - 1]
    width = bucket_width(steps[0], steps[-1], max_points)
    idx = m4_buckets(values, (steps[block_of] - steps[0]) // width)
    return {"steps": steps[idx], "values": values[idx], "walls": walls[idx]}, (
        steps[block_of] - steps[0]
    ) // width


def assert_same(got, want, msg=""):
    assert got.keys() == want.keys(), msg
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} {msg}")


@pytest.mark.parametrize("seed", range(8))
def test_summary_reads_equal_exact_m4_over_snapped_buckets(run, seed):
    rng = np.random.default_rng(seed)
    shape = ["contiguous", "strided", "gaps"][seed % 3]
    n = int(rng.integers(20_000, 120_000))
    steps, values, walls = random_series(rng, n, shape)
    record_in_batches(rng, run.id, "k", steps, values, walls)
    sid = MetricSeries.objects.get(run=run, key="k").id
    for max_points in (8, 40, 300, 1000):
        if summaries.level_for(n, max_points) is None:
            continue
        got = series_read([run.id], ["k"], max_points=max_points, with_wall=True)[run.id]["k"]
        want, bucket = exact_snapped(sid, steps, values, walls, max_points)
        assert_same(got, want, f"seed {seed} {shape} n={n} max_points={max_points}")
        # the rule, checked on the answer itself
        assert len(got["steps"]) <= max_points
        assert got["steps"][0] == steps[0] and got["steps"][-1] == steps[-1]
        picked = set(got["steps"].tolist())
        for b in np.unique(bucket):
            inside = bucket == b
            key_lo = np.where(np.isnan(values[inside]), np.inf, values[inside])
            key_hi = np.where(np.isnan(values[inside]), -np.inf, values[inside])
            assert steps[inside][np.argmin(key_lo)] in picked and steps[inside][np.argmax(key_hi)] in picked
        # no spike lost: the series' extremes are drawn
        assert np.nanmax(values) in got["values"] and np.nanmin(values) in got["values"]
        # compare_series is the same reader
        cmp = table.compare_series([run.id], ["k"], max_points=max_points, with_wall=True)[run.id]["k"]
        assert_same(cmp, got, "compare_series")


def test_one_m4_rule_for_every_reader(run):
    metrics_record(run.id, {"k": Columns.of(np.arange(100), np.arange(100.0), np.zeros(100))})
    for got in (
        series_read([run.id], ["k"], max_points=12)[run.id]["k"],
        table.compare_series([run.id], ["k"], max_points=12)[run.id]["k"],
    ):
        # buckets [0-33] [34-67] [68-99]: first and last of each (an increasing series: also min, max)
        assert got["steps"].tolist() == [0, 33, 34, 67, 68, 99]
    assert m4(np.arange(100), np.arange(100.0), 12).tolist() == [0, 33, 34, 67, 68, 99]


def test_live_appends_keep_the_summaries_exact(run):
    rng = np.random.default_rng(11)
    steps, values, walls = random_series(rng, 40_000, "contiguous")
    sid = None
    lo = 0
    while lo < len(steps):  # a sink's rhythm: small batches, each read like a live chart would
        hi = lo + int(rng.integers(50, 3000))
        metrics_record(run.id, {"k": Columns.of(steps[lo:hi], values[lo:hi], walls[lo:hi])})
        sid = sid or MetricSeries.objects.get(run=run, key="k").id
        n = min(hi, len(steps))
        if summaries.level_for(n, 40) is not None:
            got = series_read([run.id], ["k"], max_points=40, with_wall=True)[run.id]["k"]
            want, _ = exact_snapped(sid, steps[:n], values[:n], walls[:n], 40)
            assert_same(got, want, f"after {n} points")
        lo = hi
    # the live cursor reads points after it, exactly
    tail = series_read([run.id], ["k"], since_step=int(steps[-10]))[run.id]["k"]
    np.testing.assert_array_equal(tail["steps"], steps[-9:])
    # a resumed attempt truncates: the summaries follow
    metrics_truncate_after(run.id, int(steps[30_000]))
    got = series_read([run.id], ["k"], max_points=40, with_wall=True)[run.id]["k"]
    want, _ = exact_snapped(sid, steps[:30_001], values[:30_001], walls[:30_001], 40)
    assert_same(got, want, "after truncation")


def test_out_of_order_points_are_read_exactly(run):
    rng = np.random.default_rng(3)
    n = 30_000
    values = rng.standard_normal(n)
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    metrics_record(run.id, {"k": Columns.of(even, values[even], np.zeros(len(even)))})
    metrics_record(run.id, {"k": Columns.of(odd, values[odd], np.zeros(len(odd)))})  # overlapping chunks
    got = series_read([run.id], ["k"], max_points=100)[run.id]["k"]
    idx = m4(np.arange(n), values, 100)
    np.testing.assert_array_equal(got["steps"], idx)
    np.testing.assert_array_equal(got["values"], values[idx])


def test_chunks_without_summaries_are_summarized_from_their_points_then_backfilled(run):
    rng = np.random.default_rng(5)
    n = 50_000
    steps, values, walls = random_series(rng, n, "strided")
    metrics_record(run.id, {"k": Columns.of(steps, values, walls)})
    sid = MetricSeries.objects.get(run=run, key="k").id
    want, _ = exact_snapped(sid, steps, values, walls, 2000)
    # the tail chunk (not full) has no finest level: live appends rewrite it without it
    tail = MetricChunk.objects.filter(series_id=sid).order_by("-step_lo").first()
    assert tail.n < MetricChunk.CHUNK_POINTS and tail.summary_64 is None and tail.summary_256 is not None
    assert not MetricChunk.objects.filter(series_id=sid, n=MetricChunk.CHUNK_POINTS, summary_64=None).exists()
    assert summaries.level_for(n, 2000) == 64
    assert_same(series_read([run.id], ["k"], max_points=2000, with_wall=True)[run.id]["k"], want, "tail")
    # chunks from before the summaries
    MetricChunk.objects.update(summary_64=None, summary_256=None, summary_1024=None, summary_4096=None)
    assert_same(series_read([run.id], ["k"], max_points=2000, with_wall=True)[run.id]["k"], want, "none")
    migration = importlib.import_module("webapp.runs.migrations.0010_metric_chunk_summaries")
    migration.backfill(django_apps, None)
    assert not MetricChunk.objects.filter(summary_4096__isnull=True).exists()
    assert_same(
        series_read([run.id], ["k"], max_points=2000, with_wall=True)[run.id]["k"], want, "backfilled"
    )


def test_a_downsampled_read_of_a_long_series_reads_summaries_not_points(run, monkeypatch):
    from webapp.runs import metric_store

    n = 300_000
    steps = np.arange(n)
    metrics_record(run.id, {"k": Columns.of(steps, np.sin(steps / 1000.0), np.zeros(n))})
    fetched = []
    real = metric_store.fetch_sql

    def spy(sql, params):
        rows = real(sql, params)
        fetched.append((sql, rows))
        return rows

    monkeypatch.setattr(metric_store, "fetch_sql", spy)
    got = series_read([run.id], ["k"], max_points=2000)[run.id]["k"]
    assert len(fetched) == 1  # one query for the chunks: their summaries at one level
    sql, rows = fetched[0]
    assert "summary_256" in sql and "steps" not in sql.split("FROM")[0]  # no chunk shipped its points
    assert len(rows) == 1  # one row for the series; every chunk has level 256 (no second query)
    # O(max_points), and without walls only the records' steps and values are fetched
    assert rows[0][2] is None and len(bytes(rows[0][1])) // summaries.MAIN.itemsize <= 4 * 500
    assert len(got["steps"]) <= 2000 and got["steps"][0] == 0 and got["steps"][-1] == n - 1


def test_a_series_whose_tail_lacks_the_level_reads_the_tail_points_and_equals_exact_m4(run):
    """Level 64 is written for full chunks only: the partial tail's points are read and summarized
    by the reader, merged in step order with the other chunks' records."""
    n = 3 * 4096 + 1000  # three full chunks and a partial tail
    steps = np.arange(n) * 3
    values = np.cos(steps / 77.0) + (steps % 1013 == 0)
    metrics_record(run.id, {"k": Columns.of(steps, values, steps * 0.5)})
    assert summaries.level_for(n, 500) == 64
    got = series_read([run.id], ["k"], max_points=500, with_wall=True)[run.id]["k"]
    records = summaries.Blocks.concat(
        [summaries.summarize_all(steps[i : i + 4096], values[i : i + 4096], steps[i : i + 4096] * 0.5, 64)
         for i in range(0, n, 4096)]
    )  # fmt: skip
    want = summaries.m4_records(records, 500, True)
    for name in ("steps", "values", "walls"):
        assert np.array_equal(got[name], want[name]), name


def test_level_choice_reads_between_one_and_four_records_a_bucket():
    for max_points in (8, 500, 2000):
        buckets = max_points // 4
        for count in (max_points + 1, 10**4, 10**5, 10**6, 8 * 10**6):
            level = summaries.level_for(count, max_points)
            if level is None:
                assert count / buckets < summaries.LEVELS[0]
                continue
            records = count / level
            assert records >= buckets
            if level < summaries.LEVELS[-1]:
                assert records < 4 * buckets


def test_one_read_of_many_series_equals_reading_each_alone(project, alice):
    """read_series runs M4 over every series of a level in one numpy pass (summaries.m4_many): each
    series' answer is the one it gets alone, whatever its neighbours (other shapes, a partial tail
    without level 64, overlapping chunks read from points, a chunk too wide for step offsets)."""
    rng = np.random.default_rng(21)
    runs = [
        Run.objects.create(project=project, name=f"r{i}", kind="external", status="running", created_by=alice)
        for i in range(4)
    ]
    wanted = {}
    for i, r in enumerate(runs):
        for j, shape in enumerate(("contiguous", "strided", "gaps")):
            n = int(rng.integers(20_000, 60_000))
            steps, values, walls = random_series(rng, n, shape)
            if i == 3 and j == 2:
                steps[n // 3 :] += 2**33  # one chunk spans more steps than offsets hold: no summaries
            record_in_batches(rng, r.id, f"k{j}", steps, values, walls)
        even = np.arange(0, 30_000, 2)
        metrics_record(r.id, {"late": Columns.of(even, rng.standard_normal(len(even)), even * 1.0)})
        metrics_record(r.id, {"late": Columns.of(even + 1, rng.standard_normal(len(even)), even * 1.0)})
    assert MetricChunk.objects.filter(summary_4096__isnull=True).count() == 1  # the wide chunk
    for max_points in (40, 300, 2000):
        for with_wall in (False, True):
            together = series_read([r.id for r in runs], max_points=max_points, with_wall=with_wall)
            for r in runs:
                for key in ("k0", "k1", "k2", "late"):
                    alone = series_read([r.id], [key], max_points=max_points, with_wall=with_wall)[r.id][key]
                    wanted[(r.id, key)] = alone
                    assert_same(together[r.id][key], alone, f"{r.name} {key} {max_points} {with_wall}")
    # the wide series is still exact: its other chunks' summaries and the wide chunk's points
    r, key = runs[3], "k2"
    got = series_read([r.id], [key], max_points=300)[r.id][key]
    assert got["steps"][0] == wanted[(r.id, key)]["steps"][0] and len(got["steps"]) <= 300


def test_the_0016_migration_rewrites_every_chunks_summaries_from_its_points(run):
    rng = np.random.default_rng(8)
    steps, values, walls = random_series(rng, 50_000, "gaps")
    metrics_record(run.id, {"k": Columns.of(steps, values, walls)})
    want = series_read([run.id], ["k"], max_points=300, with_wall=True)[run.id]["k"]
    MetricChunk.objects.update(summary_256=b"\0" * 80 * 16)  # records in a layout the reader cannot use
    migration = importlib.import_module("webapp.runs.migrations.0016_metric_summary_records")
    migration.resummarize(django_apps, None)
    assert_same(series_read([run.id], ["k"], max_points=300, with_wall=True)[run.id]["k"], want)


def test_the_orm_reader_of_summaries_reads_what_the_postgresql_one_reads(run):
    """The portable reader (other databases) and the PostgreSQL one return the same records: same
    series, same blocks, a partial tail without level 64 summarized from its points in both."""
    from webapp.runs import metric_store

    rng = np.random.default_rng(4)
    ids = []
    for j, shape in enumerate(("contiguous", "strided", "gaps")):
        steps, values, walls = random_series(rng, 3 * 4096 + 500 * (j + 1), shape)
        metrics_record(run.id, {f"k{j}": Columns.of(steps, values, walls)})
        ids.append(MetricSeries.objects.get(run=run, key=f"k{j}").id)
    for level in (64, 256):
        for with_wall in (False, True):
            pg = metric_store._read_summaries_postgresql(ids, level, with_wall)
            orm = metric_store._read_summaries_orm(ids, level, with_wall)
            order = {sid: i for i, sid in enumerate(orm[0])}
            assert sorted(pg[0]) == sorted(orm[0]) == sorted(ids)
            starts = {name: np.r_[0, np.cumsum(r[2])[:-1]] for name, r in (("pg", pg), ("orm", orm))}
            for i, sid in enumerate(pg[0]):
                k = order[sid]
                a = pg[1].take(slice(starts["pg"][i], starts["pg"][i] + pg[2][i]))
                b = orm[1].take(slice(starts["orm"][k], starts["orm"][k] + orm[2][k]))
                np.testing.assert_array_equal(a.steps, b.steps)
                np.testing.assert_array_equal(a.values, b.values)
                if with_wall:
                    np.testing.assert_array_equal(a.walls, b.walls)
