"""The runs table's building blocks (webapp.runs.table): config filters, metric and config columns,
sorting by them; and the entropy-collapse rule (webapp.runs.collapse)."""

from __future__ import annotations

import numpy as np
import pytest
from django.http import QueryDict

from webapp.runs import collapse, table
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import MetricChunk, Run
from webapp.runs.services import RunError

pytestmark = pytest.mark.django_db


def make(project, user, name, config, **fields) -> Run:
    return Run.objects.create(
        project=project, name=name, kind="external", config=config, created_by=user, **fields
    )


def log(run, key, values, steps=None):
    steps = list(range(len(values))) if steps is None else steps
    metrics_record(run.id, {key: Columns.of(steps, values, [1.7e9 + s for s in steps])})


@pytest.fixture
def runs(alice, project):
    return {
        "a": make(project, alice, "a", {"lr": 1e-6, "entropy": {"target": 0.2}, "method": "npg", "seed": 0}),
        "b": make(project, alice, "b", {"lr": 3e-6, "entropy": {"target": 0.3}, "method": "pg", "seed": 1}),
        "c": make(project, alice, "c", {"lr": 1e-5, "method": "npg", "seed": 2, "flag": True}),
        "d": make(project, alice, "d", {"lr": "auto", "entropy": {"target": None}, "seed": 3}),
    }


def names(qs) -> list[str]:
    return sorted(qs.values_list("name", flat=True))


def filtered(query: str) -> list[str]:
    return names(table.apply_config_filters(Run.objects.all(), table.parse_config_filters(QueryDict(query))))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("config.lr__gt=1e-6", ["b", "c"]),  # numbers compare numerically; the string "auto" never matches
        ("config.lr__gte=1e-6", ["a", "b", "c"]),
        ("config.lr__lt=5e-6", ["a", "b"]),
        ("config.lr__lte=0.00001", ["a", "b", "c"]),
        ("config.entropy.target=0.2", ["a"]),
        ("config.entropy.target__exact=0.3", ["b"]),
        ("config.entropy.target=null", ["d"]),
        ("config.entropy.target__ne=0.2", ["b", "c", "d"]),  # ne includes runs without the field
        ("config.method=npg", ["a", "c"]),
        ('config.method="pg"', ["b"]),
        ("config.method__in=npg,pg", ["a", "b", "c"]),
        ("config.seed__in=[0, 3]", ["a", "d"]),
        ("config.flag=true", ["c"]),
        ("config.flag__exists=false", ["a", "b", "d"]),
        ("config.entropy__exists=true", ["a", "b", "d"]),
        ("config.lr=auto", ["d"]),
        ("config.lr__gt=a", ["d"]),  # strings compare with strings
        ("config.lr__gt=1e-6&config.method=npg", ["c"]),  # ANDed
        ("config.seed__gte=1&config.seed__lte=2", ["b", "c"]),
        ("config.nothere=1", []),
    ],
)
def test_config_filters(runs, query, expected):
    assert filtered(query) == expected


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("config.lr__foo=1", "config.lr__foo", "unknown operator 'foo'"),
        ("config.lr__gt=true", "config.lr__gt", "compares with a number or a string"),
        ("config.lr__gt=[1]", "config.lr__gt", "compares with a number or a string"),
        ("config..lr=1", "config..lr", "empty segment"),
        ("config.=1", "config.", "dotted config path"),
        ("config.lr__exists=maybe", "config.lr__exists", "true or false"),
        ("config.lr=1e999", "config.lr", "finite"),
    ],
)
def test_bad_config_filters_name_the_parameter(query, field, message):
    with pytest.raises(RunError) as info:
        table.parse_config_filters(QueryDict(query))
    assert list(info.value.field_errors) == [field]
    assert message in info.value.field_errors[field][0]


def test_values_parse_as_json_when_they_can():
    assert table.parse_value("1e-6") == 1e-6
    assert table.parse_value("true") is True
    assert table.parse_value("null") is None
    assert table.parse_value('"0.2"') == "0.2"
    assert table.parse_value("npg") == "npg"
    assert table.parse_value("NaN") == "NaN"  # not a JSON number here: the string
    # a key with a double underscore that is not an operator stays part of the path
    f = table.parse_config_param("config.my__Key", "1")
    assert f.path == ("my__Key",) and f.op == "exact"


def test_columns_parse():
    cols, errors = table.parse_columns(
        [
            "metric:policy/entropy:last",
            "metric:a:b:best_min",
            "config:entropy.target",
            "metric:x:mean_last_50",
        ]
    )
    assert [(c.kind, c.key, c.agg, c.n) for c in cols] == [
        ("metric", "policy/entropy", "last", 0),
        ("metric", "a:b", "min", 0),
        ("config", "entropy.target", "", 0),
        ("metric", "x", "mean", 50),
    ]
    assert not errors
    with pytest.raises(RunError) as info:
        table.parse_columns(["metric:x:median"])
    assert "unknown aggregate" in info.value.field_errors["col"][0]
    cols, errors = table.parse_columns(["bogus", "metric:x:mean_last_0", "config:lr"], strict=False)
    assert [c.spec for c in cols] == ["config:lr"] and len(errors) == 2


def test_metric_columns_are_computed_in_bulk(runs, django_assert_num_queries):
    a, b, c = runs["a"], runs["b"], runs["c"]
    # a: 10,000 points over three chunks, so mean_last_5000 spans two of them
    values = np.arange(10_000, dtype=float)
    log(a, "loss", values)
    log(b, "loss", [5.0, float("nan"), 1.0, 3.0])
    log(c, "reward", [1.0])
    assert MetricChunk.objects.filter(series__run=a).count() == 3
    cols, _ = table.parse_columns(
        ["metric:loss:last", "metric:loss:best_min", "metric:loss:max", "metric:loss:mean_last_5000",
         "metric:loss:mean_last_2", "config:entropy.target"]
    )  # fmt: skip
    run_list = [a, b, c]
    # the series (ORM) + the tail chunks for the means (a raw binary fetch, not counted here)
    with django_assert_num_queries(1):
        values_by_run = table.column_values(run_list, cols)
    va, vb, vc = (values_by_run[r.id] for r in run_list)
    assert (va["metric:loss:last"].value, va["metric:loss:last"].step) == (9999.0, 9999)
    assert va["metric:loss:best_min"].value == 0.0 and va["metric:loss:max"].value == 9999.0
    assert va["metric:loss:mean_last_5000"].value == pytest.approx(np.arange(5000, 10_000).mean())
    assert va["metric:loss:mean_last_2"].value == pytest.approx(9998.5)
    assert vb["metric:loss:mean_last_2"].value == pytest.approx(2.0)
    assert vb["metric:loss:mean_last_5000"].value == pytest.approx(3.0)  # NaN ignored
    assert vb["metric:loss:best_min"].value == 1.0
    assert vc["metric:loss:last"].value is None and vc["metric:loss:last"].text == ""
    assert va["config:entropy.target"].text == "0.2" and vc["config:entropy.target"].value is None


def test_sorting_by_metric_and_config_columns(runs):
    a, b, c, d = runs["a"], runs["b"], runs["c"], runs["d"]
    log(a, "loss", [3.0, 2.0])
    log(b, "loss", [1.0, 4.0])
    log(c, "loss", [0.5, 0.2, 9.0])

    def order(spec, desc=False):
        (col,), _ = table.parse_columns([spec])
        return list(table.order_by_column(Run.objects.all(), col, desc).values_list("name", flat=True))

    assert order("metric:loss:last") == ["a", "b", "c", "d"]  # no value: last
    assert order("metric:loss:last", desc=True) == ["c", "b", "a", "d"]
    assert order("metric:loss:min") == ["c", "b", "a", "d"]
    assert order("metric:loss:max", desc=True) == ["c", "b", "a", "d"]
    assert order("config:seed", desc=True) == ["d", "c", "b", "a"]
    # mean_last_N sorts in Python
    (col,), _ = table.parse_columns(["metric:loss:mean_last_2"])
    rows = [a, b, c, d]
    values = table.column_values(rows, [col])
    assert [r.name for r in table.python_sort(rows, values, col, descending=False)] == ["a", "b", "c", "d"]
    assert [r.name for r in table.python_sort(rows, values, col, descending=True)] == ["c", "b", "a", "d"]


def test_flatten_and_display():
    assert table.flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x", "f": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": "x",
        "f": {},
    }
    assert table.display_value(True) == "true" and table.display_value(1e-6) == "1e-06"
    assert table.display_value({"b": 1}) == '{"b":1}'


# --- entropy collapse --------------------------------------------------------------------------------


def entropy_curve(n=1000, collapse_at=None, start=1.2, end=0.8):
    steps = np.arange(n)
    values = np.linspace(start, end, n)
    if collapse_at is not None:
        values[collapse_at:] = 0.01
    return steps, values


def test_collapse_rule_flags_an_early_fall():
    rule = collapse.Rule()
    steps, values = entropy_curve(collapse_at=100)
    v = collapse.evaluate("policy/entropy", steps, values, rule)
    assert v.flagged and v.key == "policy/entropy"
    assert v.initial == pytest.approx(1.2, abs=0.01) and v.threshold == pytest.approx(0.12, abs=0.01)
    assert 100 <= v.step <= 105 and v.value < v.threshold
    assert v.window_end == pytest.approx(199.8)
    assert "fell from 1.2 to" in v.message


def test_collapse_rule_ignores_late_falls_slow_decay_and_single_dips():
    rule = collapse.Rule()
    steps, values = entropy_curve(collapse_at=500)  # after the first 20% of the steps
    assert not collapse.evaluate("entropy", steps, values, rule).flagged
    steps, values = entropy_curve(start=1.2, end=0.3)  # a slow decay
    assert not collapse.evaluate("entropy", steps, values, rule).flagged
    steps, values = entropy_curve()
    values[50] = 0.0  # one bad point: the 5-point mean stays high
    assert not collapse.evaluate("entropy", steps, values, rule).flagged
    low = np.full(1000, 0.04)  # never was high
    v = collapse.evaluate("entropy", np.arange(1000), low, rule)
    assert not v.flagged and "already" in v.reason
    v = collapse.evaluate("entropy", np.arange(5), np.ones(5), rule)
    assert not v.flagged and "fewer than" in v.reason


def test_collapse_rule_thresholds_come_from_settings(settings):
    steps, values = entropy_curve(collapse_at=None, start=1.0, end=0.5)  # halves over the run
    settings.ORLAB_COLLAPSE_RATIO = 0.95
    settings.ORLAB_COLLAPSE_WINDOW = 300  # an absolute window: steps 0..300
    rule = collapse.Rule.from_settings()
    assert rule.ratio == 0.95 and rule.window == 300
    v = collapse.evaluate("entropy", steps, values, rule)
    assert v.flagged and v.window_end == 300 and v.step <= 300
    settings.ORLAB_COLLAPSE_FLOOR = 0.9
    settings.ORLAB_COLLAPSE_RATIO = 0.1
    assert collapse.evaluate("entropy", steps, values, collapse.Rule.from_settings()).flagged
    settings.ORLAB_ENTROPY_KEYS = ["my/entropy"]
    assert collapse.Rule.from_settings().keys == ("my/entropy",)
    assert "my/entropy" in collapse.Rule.from_settings().describe()


def test_collapse_verdicts_in_bulk_pick_the_first_known_key(runs, django_assert_max_num_queries):
    a, b, c = runs["a"], runs["b"], runs["c"]
    steps, collapsing = entropy_curve(n=20_000, collapse_at=1000)
    metrics_record(a.id, {"actor/entropy": Columns.of(steps, collapsing, steps * 1.0)})
    _, healthy = entropy_curve(n=20_000)
    metrics_record(a.id, {"entropy": Columns.of(steps, healthy, steps * 1.0)})  # lower priority
    metrics_record(b.id, {"policy/entropy": Columns.of(steps, healthy, steps * 1.0)})
    log(c, "loss", [1.0, 2.0])
    rule = collapse.Rule()
    with django_assert_max_num_queries(3):
        found = collapse.verdicts([a.id, b.id, c.id], rule)
    assert set(found) == {a.id, b.id}
    assert found[a.id].flagged and found[a.id].key == "actor/entropy" and 1000 <= found[a.id].step < 1010
    assert not found[b.id].flagged
    with django_assert_max_num_queries(1):  # cached
        again = collapse.verdicts([a.id, b.id, c.id], rule)
    assert again[a.id].as_dict() == found[a.id].as_dict()


def test_collapse_long_windows_are_sampled(runs):
    a = runs["a"]
    n = 400_000  # the 20% window holds 80,000 points = 20 chunks > MAX_WINDOW_CHUNKS
    steps, values = entropy_curve(n=n, collapse_at=30_000)
    for lo in range(0, n, 100_000):
        sl = slice(lo, lo + 100_000)
        metrics_record(a.id, {"entropy": Columns.of(steps[sl], values[sl], steps[sl] * 1.0)})
    v = collapse.verdicts([a.id], collapse.Rule())[a.id]
    assert v.flagged and 30_000 <= v.step <= 40_000


# --- compare reads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_m4_fast_keeps_first_last_min_and_max_of_each_bucket(seed):
    from webapp.runs.downsample import m4

    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 50_000))
    steps = np.arange(n) + 1000 * seed
    values = rng.standard_normal(n)
    values[rng.integers(0, n, size=n // 10)] = np.nan
    values[rng.integers(0, n, size=3)] = rng.choice([np.inf, -np.inf, 7.0], size=3)
    if seed == 4:
        values[: n // 2] = np.nan  # buckets of only NaN
    if seed == 5:
        values = np.round(values, 1)  # ties
    for max_points in (8, 100, 1500, n + 1):
        idx = table.m4_fast(steps, values, max_points)
        assert len(idx) <= max_points and np.all(np.diff(idx) > 0)
        if n <= max_points:
            assert len(idx) == n
            continue
        assert idx[0] == 0 and idx[-1] == n - 1
        width = -(-n // (max_points // 4))
        picked = set(idx.tolist())
        for lo in range(0, n, width):
            bucket = values[lo : lo + width]
            assert lo in picked and min(lo + width, n) - 1 in picked
            finite = ~np.isnan(bucket)
            if finite.any():
                assert lo + int(np.argmin(np.where(finite, bucket, np.inf))) in picked
                assert lo + int(np.argmax(np.where(finite, bucket, -np.inf))) in picked
    # steps with gaps: exactly m4
    gappy = np.sort(rng.choice(10 * n, size=n, replace=False))
    assert np.array_equal(table.m4_fast(gappy, values, 100), m4(gappy, values, 100))


def test_compare_series_reads_what_series_read_reads(runs):
    from webapp.runs.metric_store import series_read

    a, b = runs["a"], runs["b"]
    rng = np.random.default_rng(0)
    n = 20_000
    metrics_record(a.id, {"every": Columns.of(np.arange(n), rng.standard_normal(n), 1.7e9 + np.arange(n))})
    strided = np.arange(0, 3 * n, 3)
    metrics_record(a.id, {"strided": Columns.of(strided, rng.standard_normal(n), 1.7e9 + strided)})
    # b: contiguous, then late points that land in a chunk of their own (out of order)
    metrics_record(
        b.id, {"every": Columns.of(np.arange(0, n, 2), rng.standard_normal(n // 2), np.zeros(n // 2))}
    )
    metrics_record(b.id, {"every": Columns.of(np.arange(1, 999, 2), rng.standard_normal(499), np.ones(499))})
    for kwargs in (
        {},
        {"with_wall": True},
        {"since_step": 15_000, "with_wall": True},
        {"keys": ["strided"], "max_points": 100},  # steps with gaps: m4 itself
    ):
        keys = kwargs.pop("keys", None)
        want = series_read([a.id, b.id], keys, **kwargs)
        got = table.compare_series([a.id, b.id], keys, **kwargs)
        assert want.keys() == got.keys()
        for rid in want:
            assert want[rid].keys() == got[rid].keys()
            for key, cols in want[rid].items():
                for name, arr in cols.items():
                    np.testing.assert_array_equal(
                        got[rid][key][name], arr, err_msg=f"{rid} {key} {name} {kwargs}"
                    )
    # downsampled: the points are points of the series, spikes survive
    full = table.compare_series([a.id], ["every"], with_wall=True)[a.id]["every"]
    down = table.compare_series([a.id], ["every"], max_points=1500, with_wall=True)[a.id]["every"]
    assert len(down["steps"]) <= 1500
    np.testing.assert_array_equal(down["values"], full["values"][down["steps"]])
    np.testing.assert_array_equal(down["walls"], full["walls"][down["steps"]])
    assert down["values"].max() == full["values"].max() and down["values"].min() == full["values"].min()


def test_compare_series_caches_downsampled_series_until_a_write(runs, django_assert_num_queries, settings):
    a = runs["a"]
    n = 5000
    metrics_record(a.id, {"loss": Columns.of(np.arange(n), np.linspace(1, 0, n), np.zeros(n))})
    first = table.compare_series([a.id], ["loss"], max_points=100)
    with django_assert_num_queries(1):  # the series' counts only: no chunk is read
        again = table.compare_series([a.id], ["loss"], max_points=100)
    np.testing.assert_array_equal(again[a.id]["loss"]["values"], first[a.id]["loss"]["values"])
    metrics_record(a.id, {"loss": Columns.of([n], [-5.0], [0.0])})
    after = table.compare_series([a.id], ["loss"], max_points=100)[a.id]["loss"]
    assert after["steps"][-1] == n and after["values"].min() == -5.0
    settings.ORLAB_COMPARE_CACHE = False
    assert not table.compare_cache_enabled()
