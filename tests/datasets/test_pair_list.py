"""The pair list's helpers for large datasets: counts that stop at a cap, distinct sources and drop
reasons by index probes, and the API's ``count_capped``."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.datasets.models import Dataset, PreferencePair
from webapp.datasets.selectors import CappedPaginator, pair_distinct, pair_list

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(project, alice):
    ds = Dataset.objects.create(project=project, created_by=alice, name="d", kind="preference", row_count=30)
    sources = ["magpie", "helpsteer2", "", "offsetbias", "helpsteer2"]
    PreferencePair.objects.bulk_create(
        PreferencePair(
            dataset=ds, row=i, prompt=f"Explain item {i}" if i % 3 else f"Name a colour {i}",
            chosen=f"Answer {i}", rejected=f"No {i}", chosen_text=f"Answer {i}", rejected_text=f"No {i}",
            source=sources[i % 5], kept=i % 7 != 0, drop_reason="" if i % 7 else ["dedup", "length"][i % 2],
        )
        for i in range(30)
    )  # fmt: skip
    return ds


def test_a_count_stops_at_the_cap_and_a_deep_page_raises_it(dataset):
    qs = pair_list(dataset, search="explain")  # rows not divisible by 3: 20 of 30
    page = CappedPaginator(qs, 5, cap=8, search=True).get_page(1)
    assert page.paginator.capped and page.paginator.shown_count == 8 and page.paginator.count == 9
    assert [p.row for p in page] == [1, 2, 4, 5, 7] and page.has_next()
    # page 3 needs rows 10..14: the cap follows (15), still short of the 20 matches
    page = CappedPaginator(qs, 5, cap=8, search=True).get_page(3)
    assert page.paginator.capped and page.paginator.shown_count == 15 and page.has_next()
    assert [p.row for p in page] == [16, 17, 19, 20, 22]
    # the last page: the count is exact again
    page = CappedPaginator(qs, 5, cap=8, search=True).get_page(4)
    assert not page.paginator.capped and page.paginator.count == 20 and not page.has_next()
    assert CappedPaginator(qs, 5, cap=100).count == 20


@pytest.mark.parametrize("cap", [3, 100])  # many matches (the row walk) or few (the search index)
@pytest.mark.parametrize("ordering", ["row", "-row", "chosen_len"])
def test_both_search_plans_list_the_same_pairs_and_leave_the_session_as_it_was(dataset, cap, ordering):
    from django.db import connection

    qs = pair_list(dataset, search="explain", source="helpsteer2", ordering=ordering)
    expected = [p.row for p in pair_list(dataset, search="explain", source="helpsteer2", ordering=ordering)]
    assert len(expected) == 8
    paginator = CappedPaginator(qs, 5, cap=cap, search=True, by_row=ordering != "chosen_len")
    got = [p.row for n in (1, 2) for p in paginator.page(n)]
    assert got == expected
    with connection.cursor() as cur:
        cur.execute("SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan')")
        assert cur.fetchone() == ("on", "on")


def test_an_unfiltered_list_past_the_cap_counts_the_dataset_rows(dataset):
    paginator = CappedPaginator(pair_list(dataset), 5, cap=8, total=dataset.row_count)
    assert paginator.count == 30 and not paginator.capped and paginator.num_pages == 6
    # a total that is not past the cap is never trusted over the rows themselves
    assert CappedPaginator(pair_list(dataset), 5, cap=100, total=0).count == 30


def test_distinct_sources_and_drop_reasons(dataset):
    assert pair_distinct(dataset, "source", limit=10) == ["", "helpsteer2", "magpie", "offsetbias"]
    assert pair_distinct(dataset, "source", limit=2) == ["", "helpsteer2"]
    assert pair_distinct(dataset, "drop_reason", limit=10, dropped_only=True) == ["dedup", "length"]
    assert pair_distinct(dataset, "drop_reason", limit=10) == ["", "dedup", "length"]
    other = Dataset.objects.create(project=dataset.project, name="empty", kind="preference")
    assert pair_distinct(other, "source", limit=10) == []
    with pytest.raises(ValueError):
        pair_distinct(dataset, "prompt", limit=10)


def test_the_api_says_whether_its_count_is_capped(api, project):
    rows = [{"prompt": f"Explain {i}", "chosen": f"A{i}", "rejected": f"B{i}"} for i in range(4)]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    f = SimpleUploadedFile("p.jsonl", content)
    ds = api.post("/api/datasets/", {"file": f, "name": "p", "kind": "preference", "project": project.id})
    listed = api.get(f"/api/datasets/{ds.json()['id']}/pairs/?search=explain&page_size=2").json()
    assert listed["count"] == 4 and listed["count_capped"] is False and len(listed["results"]) == 2
    assert api.get(f"/api/datasets/{ds.json()['id']}/pairs/").json()["count"] == 4


def test_the_pair_browser_shows_a_capped_count_and_pages_past_it(client, alice, project, tmp_path):
    from webapp.datasets import services
    from webapp.datasets.selectors import COUNT_CAP

    n = COUNT_CAP + 60
    path = tmp_path / "big.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"Explain {i}", "chosen": f"A {i}", "rejected": "B"}) + "\n"
            for i in range(n)
        )
    )
    ds = services.dataset_create_for_import(
        user=alice, project=project, name="big", kind="preference", path=path, filename="big.jsonl"
    )
    services.dataset_import(ds, path)
    client.force_login(alice)
    base = f"/datasets/{ds.pk}/pairs/"
    html = client.get(base + "?q=explain").content.decode()
    assert f">{COUNT_CAP}+ pairs match<" in html and f"page 1 of {COUNT_CAP // 50 + 1}+" in html
    html = client.get(base).content.decode()  # unfiltered: the dataset's exact size
    assert f">{n} pairs<" in html and f"page 1 of {n // 50 + 1}<" in html
    last = n // 50 + 1
    html = client.get(base + f"?q=explain&page={last}").content.decode()
    assert f">{n} pairs match<" in html and f"page {last} of {last}<" in html and 'rel="next"' not in html
    assert f'data-row="{n - 1}"' in html
