"""The runs-table query (webapp.selectors.runs) is one: the runs page, GET /api/runs/ and GET
/api/runs/table/ give the same rows in the same order for the same parameters, old spellings (saved
views, the README, scripts) included."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.http import QueryDict
from django.utils import timezone

from webapp.runs.models import MetricSeries, Run
from webapp.runs.services import RunError
from webapp.selectors.runs import RunTableQuery

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(alice, project):
    now = timezone.now()
    specs = [
        # name, group, status, tags, lr, started (minutes ago), duration (minutes), loss end
        ("alpha", "g1", "succeeded", ["x"], 1e-6, 50, 10, 0.9),
        ("beta", "g1", "failed", [], 3e-6, 40, 30, 0.5),
        ("gamma", "g2", "succeeded", ["x", "y"], 1e-5, 30, 5, 0.7),
        ("delta", "", "running", [], 1e-5, 20, None, 0.6),
        ("epsilon", "g2", "queued", [], 3e-5, None, None, None),
        ("zeta", "g1", "cancelled", ["y"], 1e-4, 10, 1, 0.8),
    ]
    out = []
    for name, group, status, tags, lr, ago, minutes, loss in specs:
        started = now - timedelta(minutes=ago) if ago is not None else None
        finished = started + timedelta(minutes=minutes) if started and minutes is not None else None
        run = Run.objects.create(
            project=project,
            name=name,
            kind="external",
            group=group,
            status=status,
            tags=tags,
            config={"lr": lr, "opt": {"name": "adam" if lr < 1e-5 else "sgd"}},
            created_by=alice,
            started_at=started,
            finished_at=finished,
        )
        if loss is not None:
            # the series' aggregates only (what last/min/max columns read): the point store is being
            # reworked beside this test (issue 12.2), and the table never reads points for these
            MetricSeries.objects.create(
                run=run,
                key="train/loss",
                count=20,
                last_step=19,
                last_value=loss,
                min_value=loss,
                max_value=2.0,
            )
        out.append(run)
    return out


def page_ids(client, project, params) -> list[int]:
    response = client.get(f"/projects/{project.pk}/", params)
    assert response.status_code == 200
    return [
        int(x) for x in re.findall(r'data-testid="run-row" data-run-id="(\d+)"', response.content.decode())
    ]


def api_ids(api, path, project, params) -> list[int]:
    response = api.get(path, {**params, "project": project.pk})
    assert response.status_code == 200, response.content
    return [r["id"] for r in response.json()["results"]]


SAME_ROWS = [
    {},
    {"ordering": "name"},
    {"ordering": "-name"},
    {"ordering": "started"},
    {"ordering": "-started"},
    {"ordering": "-finished"},
    {"ordering": "created"},
    {"ordering": "status"},
    {"ordering": "group,-name"},
    {"ordering": "-duration"},
    {"ordering": "duration"},
    {"ordering": "id"},
    {"ordering": "metric:train/loss:last"},
    {"ordering": "-metric:train/loss:min"},
    {"ordering": "metric:train/loss:mean_last_5"},
    {"ordering": "-config:lr"},
    {"status": "succeeded,failed"},
    {"kind": "external", "group": "g1"},
    {"tag": "x"},
    {"q": "ta"},
    {"config.lr__gt": "2e-6", "ordering": "name"},
    {"config.opt.name": "sgd"},
    {"col": "metric:train/loss:last", "ordering": "-metric:train/loss:last"},
]


@pytest.mark.parametrize(
    "params", SAME_ROWS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "default"
)
def test_the_page_and_both_apis_give_the_same_rows_in_the_same_order(
    client_alice, api, project, runs, params
):
    on_page = page_ids(client_alice, project, params)
    assert on_page, "the parameters select no run: the comparison would say nothing"
    assert api_ids(api, "/api/runs/", project, params) == on_page
    assert api_ids(api, "/api/runs/table/", project, params) == on_page


def test_orderings_sort_as_named(client_alice, project, runs):
    by_name = {r.id: r.name for r in runs}

    def names(params):
        return [by_name[i] for i in page_ids(client_alice, project, params)]

    assert names({}) == ["zeta", "epsilon", "delta", "gamma", "beta", "alpha"]  # newest first
    assert names({"ordering": "-started"}) == ["zeta", "delta", "gamma", "beta", "alpha", "epsilon"]
    assert names({"ordering": "group,-name"}) == ["delta", "zeta", "beta", "alpha", "gamma", "epsilon"]
    assert names({"ordering": "metric:train/loss:last"}) == [
        "beta",
        "delta",
        "gamma",
        "zeta",
        "alpha",
        "epsilon",
    ]


OLD_AND_NEW = [
    ({"search": "ta"}, {"q": "ta"}),
    ({"status__in": "succeeded,failed"}, {"status": "succeeded,failed"}),
    ({"ordering": "-created_at"}, {"ordering": "-created"}),
    ({"ordering": "started_at"}, {"ordering": "started"}),
    ({"ordering": "-finished_at"}, {"ordering": "-finished"}),
    ({"ordering": "group,-started_at"}, {"ordering": "group,-started"}),
]


@pytest.mark.parametrize(
    ("old", "new"), OLD_AND_NEW, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items())
)
def test_old_spellings_select_what_the_new_ones_do(client_alice, api, project, runs, old, new):
    expected = page_ids(client_alice, project, new)
    assert page_ids(client_alice, project, old) == expected
    assert api_ids(api, "/api/runs/", project, old) == expected
    assert api_ids(api, "/api/runs/table/", project, old) == expected


def test_old_spellings_are_rewritten_canonically_in_the_page_links(client_alice, project, runs):
    html = client_alice.get(
        f"/projects/{project.pk}/", {"search": "ta", "status__in": "failed", "ordering": "-started_at"}
    ).content.decode()
    # the sort headers and chips link with the one vocabulary
    assert 'href="?status=failed&amp;q=ta&amp;ordering=started"' in html  # the Started header flips it


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"ordering": "nope"}, "ordering"),
        ({"ordering": "metric:x:median"}, "ordering"),
        ({"status": "sleeping"}, "status"),
        ({"status__in": "sleeping"}, "status"),
        ({"project": "x"}, "project"),
        ({"project": "0"}, "project"),
        ({"ids": "1,x"}, "ids"),
        ({"config.lr__bogus": "1"}, "config.lr__bogus"),
    ],
)
def test_bad_parameters_are_400s_on_both_apis_and_notices_on_the_page(
    client_alice, api, project, runs, params, field
):
    for path in ("/api/runs/", "/api/runs/table/"):
        r = api.get(path, params)
        assert r.status_code == 400, (path, r.content)
        assert field in r.json()["errors"], (path, r.json())
    if field != "project":  # the page's project is in its path
        response = client_alice.get(f"/projects/{project.pk}/", params)
        assert response.status_code == 200
        if params.get("ordering") == "nope":  # an unknown plain name sorts by the default
            assert page_ids(client_alice, project, params) == page_ids(client_alice, project, {})
        else:
            assert field.split("__")[0] in response.content.decode()


def test_query_parse_canonical_items():
    q = RunTableQuery.parse(
        QueryDict(
            "search=a&status__in=failed&ordering=-started_at&col=config:lr&config.lr__gt=1&page_size=100"
        ),
        Run.objects.none(),
    )
    assert q.filters["q"] == "a" and q.filters["status"] == "failed"
    assert q.ordering == "-started"
    assert q.link_items() == [
        ("status", "failed"),
        ("q", "a"),
        ("config.lr__gt", "1"),
        ("col", "config:lr"),
        ("page_size", "100"),
        ("ordering", "-started"),
    ]
    with pytest.raises(RunError) as exc:
        RunTableQuery.parse(QueryDict("ordering=bogus"), Run.objects.none())
    assert "ordering" in exc.value.field_errors
    lenient = RunTableQuery.parse(QueryDict("ordering=bogus&status=zzz"), Run.objects.none(), strict=False)
    assert lenient.ordering == "-created" and lenient.errors and lenient.filters["status"] == ""


# --- pairs: the pair browser and GET /api/datasets/<id>/pairs/ share webapp.selectors.pairs.PairQuery ---

from tests.ui import test_datasets_pages  # noqa: E402

browse = test_datasets_pages.browse  # the 6-pair set with a reward model that scored 4 pairs
rows_of = test_datasets_pages.rows_of


def pair_page_rows(client, ds, query: str) -> list[int]:
    response = client.get(f"/datasets/{ds.pk}/pairs/?{query}")
    assert response.status_code == 200
    return rows_of(response.content.decode())


def pair_api(api, ds, query: str):
    return api.get(f"/api/datasets/{ds.pk}/pairs/?{query}")


def pair_api_rows(api, ds, query: str) -> list[int]:
    response = pair_api(api, ds, query)
    assert response.status_code == 200, response.content
    return [p["row"] for p in response.json()["results"]]


PAIR_QUERIES = [
    "",
    "ordering=-row",
    "ordering=-chosen_len",
    "ordering=rejected_len",
    "ordering=source",
    "source=magpie",
    "kept=false",
    "kept=true&source=magpie",
    "drop_reason=near_dedup",
    "q=photosynthesis",
    "min_len=30",
    "max_len=30",
    "min_len=30&max_len=38",
    "min_len=30&ordering=-chosen_len",
    "rm={rm}",
    "rm={rm}&ordering=margin",
    "rm={rm}&ordering=-margin",
    "rm={rm}&ordering=margin&source=magpie",
    "rm={rm}&ordering=-margin&q=photosynthesis",
    "rm={rm}&ordering=margin&min_len=30",
]


@pytest.mark.parametrize("query", PAIR_QUERIES, ids=lambda q: q or "default")
def test_the_pair_browser_and_the_pairs_api_give_the_same_rows(client_alice, api, browse, query):
    ds, query = browse["dataset"], query.format(rm=browse["ckpt"].pk)
    on_page = pair_page_rows(client_alice, ds, query)
    assert on_page, "the query selects nothing: the comparison would say nothing"
    assert pair_api_rows(api, ds, query) == on_page


def test_pairs_api_filters_by_length_and_orders_by_margin(api, browse):
    ds, rm = browse["dataset"], browse["ckpt"].pk
    lengths = {p.row: p.chosen_len for p in browse["pairs"]}
    assert pair_api_rows(api, ds, "min_len=30") == [r for r in range(6) if lengths[r] >= 30]
    assert pair_api_rows(api, ds, "min_len=30&max_len=38") == [r for r in range(6) if 30 <= lengths[r] <= 38]
    assert pair_api_rows(api, ds, f"max_len={min(lengths.values())}") == [
        r for r in range(6) if lengths[r] == min(lengths.values())
    ]
    # margins ascending and descending, unscored pairs last by row; each pair carries its margin
    assert pair_api_rows(api, ds, f"rm={rm}&ordering=margin") == [1, 3, 0, 2, 4, 5]
    assert pair_api_rows(api, ds, f"rm={rm}&ordering=-margin") == [2, 0, 3, 1, 4, 5]
    results = pair_api(api, ds, f"rm={rm}&ordering=-margin").json()["results"]
    assert [p["margin"] for p in results] == [2.0, 0.5, 0.1, -1.25, None, None]
    assert all(p["margin"] is None for p in pair_api(api, ds, "").json()["results"])
    # the filtered count is exact below the cap
    body = pair_api(api, ds, "min_len=30").json()
    assert body["count"] == len([r for r in range(6) if lengths[r] >= 30]) and body["count_capped"] is False


def test_pairs_api_old_spelling_search_is_q(api, browse):
    ds = browse["dataset"]
    assert (
        pair_api_rows(api, ds, "search=photosynthesis")
        == pair_api_rows(api, ds, "q=photosynthesis")
        == [0, 5]
    )
    assert pair_api_rows(api, ds, "kept=0") == pair_api_rows(api, ds, "kept=false") == [3]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("min_len=abc", "min_len"),
        ("max_len=-1", "max_len"),
        ("ordering=bogus", "ordering"),
        ("ordering=margin", "ordering"),  # no reward model
        ("rm=999999", "rm"),
        ("kept=maybe", "kept"),
    ],
)
def test_pairs_api_bad_parameters_are_400s_and_the_page_ignores_them(client_alice, api, browse, query, field):
    ds = browse["dataset"]
    r = pair_api(api, ds, query)
    assert r.status_code == 400 and field in r.json()["errors"], r.content
    assert pair_page_rows(client_alice, ds, query) == [0, 1, 2, 3, 4, 5]


def test_pairs_api_does_not_offer_another_users_reward_model(bob_api, api, browse, bob):
    ds, rm = browse["dataset"], browse["ckpt"].pk
    assert pair_api(bob_api, ds, "").status_code == 404  # not bob's dataset
    assert pair_api(api, ds, f"rm={rm}").status_code == 200


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/api/runs/", "project=", "project"),
        ("/api/runs/table/", "project=", "project"),
        ("/api/runs/", "project=1&project=2", "project"),
        ("pairs", "kept=", "kept"),
        ("pairs", "min_len=", "min_len"),
        ("pairs", "max_len=3&max_len=4", "max_len"),
        ("pairs", "rm=", "rm"),
        ("pairs", "ordering=", "ordering"),
    ],
)
def test_the_apis_refuse_empty_or_repeated_typed_parameters(api, browse, path, query, field):
    """What the schema calls an integer, a boolean or one of listed values is neither empty nor a list."""
    url = f"/api/datasets/{browse['dataset'].pk}/pairs/" if path == "pairs" else path
    r = api.get(f"{url}?{query}")
    assert r.status_code == 400 and field in r.json()["errors"], r.content
