"""Word search: walk vs bitmap is decided by counting the completions' matches in SampleSearch (not by
the planner's estimate, a fixed 0.5 % for a word missing from its statistics), and both modes give the
same rows in the same order. Substring search gives what a brute-force filter over the decoded
completions gives, in page order, for words, a literal with no word and rows not indexed yet, on page 1
and page 2."""

from __future__ import annotations

import pytest
from django.db import connection
from django.http import QueryDict

from webapp.runs import sample_search, services
from webapp.runs.models import Sample
from webapp.runs.samples import samples_record
from webapp.selectors import samples as sel
from webapp.selectors.samples import SampleQuery

pytestmark = pytest.mark.django_db

N = 400  # samples of the run: 4 steps x 25 groups of 4


def _text(i: int) -> str:
    words = ["lemma", "proof", "sum", "term"]
    common = "telescoping " if i % 10 < 4 else ""  # 40 % of the rows
    rare = "eigenvalue " if i in (123, 391) else ""
    return f"{common}{rare}{words[i % 4]} step {i} gives \\boxed{{{i % 13}}} then a_b{i % 3}."


def _rows(step: int, lo: int, hi: int) -> list[dict]:
    return [
        {"step": step, "prompt": "Sum the terms.", "completion": _text(i), "reward": 1.0, "verdict": "correct",
         "group_index": (i % 100) // 4, "member_index": i % 4, "client_key": f"k{i}"}
        for i in range(lo, hi)
    ]  # fmt: skip


@pytest.fixture
def run(alice, project):
    run = services.run_create(user=alice, project=project, name="rl", kind="external", config={})
    for step in range(3):  # steps 0-2 indexed, step 3 queued only
        samples_record(run, _rows(step, step * 100, step * 100 + 100))
    sample_search.index_pending()
    with connection.cursor() as cur:
        cur.execute("ANALYZE runs_samplesearch")
    samples_record(run, _rows(3, 300, 400))
    assert sample_search.lag(run.pk) >= 100
    return run


def _in_page_order(run, keep) -> list[str]:
    rows = sorted(Sample.objects.filter(run=run), key=lambda s: (s.step, s.group_index, s.member_index, s.pk))
    return [s.client_key for s in rows if keep(s)]  # the model decodes the completion on load


def _page(run, query: str, number: int = 1, per_page: int = 25):
    state = SampleQuery(QueryDict(query), run, strict=True)
    paginator = state.paginator(state.queryset(), per_page)
    page = paginator.page(number)
    return paginator, [s.client_key for s in page.object_list]


def test_a_common_word_walks_and_a_rare_one_reads_the_index_both_in_page_order(run):
    expected = _in_page_order(run, lambda s: "telescoping" in s.completion.split())
    assert len(expected) == 160
    paginator, keys = _page(run, "q=telescoping")
    assert paginator.mode == "walk"  # counted: 120 indexed matches + 40 queued >= 1 % of the rows
    assert keys == expected[:25] and paginator.capped
    paginator, keys = _page(run, "q=telescoping", 2)
    assert keys == expected[25:50]

    expected = _in_page_order(run, lambda s: "eigenvalue" in s.completion.split())
    assert len(expected) == 2  # one indexed, one queued: under 1 % of the 300 indexed rows
    paginator, keys = _page(run, "q=eigenvalue")
    assert paginator.mode == "bitmap"
    assert keys == expected and paginator.count == 2 and not paginator.capped


def test_the_decision_counts_and_does_not_ask_the_planner(run, monkeypatch):
    # a threshold of 161 matches: telescoping's 160 are too few, the bitmap reads them (same rows)
    monkeypatch.setattr(sel, "WALK_COUNT_MAX", 161)
    monkeypatch.setattr(sel, "WALK_DENSITY", 1.0)
    expected = _in_page_order(run, lambda s: "telescoping" in s.completion.split())
    paginator, keys = _page(run, "q=telescoping")
    assert paginator.mode == "bitmap" and keys == expected[:25]
    assert paginator.count == 160
    paginator, keys = _page(run, "q=telescoping", 7)
    assert keys == expected[150:]
    # its count came from the decision's count (no other filter); with a filter, the count statement
    paginator, keys = _page(run, "q=telescoping&step=3")
    assert paginator.mode == "bitmap" and paginator.count == 40 and keys == expected[120:145]
    paginator, keys = _page(run, "q=telescoping&verdict=correct", 2)
    assert paginator.count == 160 and keys == expected[25:50]
    monkeypatch.setattr(sel, "COUNT_CAP", 100)
    paginator, keys = _page(run, "q=telescoping")
    assert paginator.count == 101 and paginator.capped and keys == expected[:25]
    monkeypatch.setattr(sel, "WALK_COUNT_MAX", 160)
    paginator, keys = _page(run, "q=telescoping", 7)
    assert paginator.mode == "walk" and keys == expected[150:]


@pytest.mark.parametrize(
    "needle",
    ["\\boxed{4}", "telescoping lemma", "gives \\boxed", "A_B2.", "oxe", "step 31", "ep 3"],
)
def test_substring_search_is_a_brute_force_filter_in_page_order(run, needle):
    expected = _in_page_order(run, lambda s: needle.lower() in s.completion.lower())
    assert expected  # every pattern here matches
    paginator, keys = _page(run, "contains=" + needle.replace("\\", "%5C").replace(" ", "+"))
    assert keys == expected[:25]
    if len(expected) > 25:
        _, keys2 = _page(run, "contains=" + needle.replace("\\", "%5C").replace(" ", "+"), 2)
        assert keys2 == expected[25:50]
    # step 3: rows not indexed yet (queued), rechecked all the same
    expected = _in_page_order(run, lambda s: s.step == 3 and needle.lower() in s.completion.lower())
    assert expected
    _, keys = _page(run, "step=3&contains=" + needle.replace("\\", "%5C").replace(" ", "+"))
    assert keys == expected[:25]


def test_word_and_substring_pages_by_other_orders_match_brute_force(run):
    rows = sorted(
        Sample.objects.filter(run=run), key=lambda s: (-s.step, -s.group_index, -s.member_index, -s.pk)
    )
    expected = [s.client_key for s in rows if "telescoping" in s.completion.split()]
    _, keys = _page(run, "q=telescoping&ordering=-step", 2)
    assert keys == expected[25:50]
    expected = [s.client_key for s in rows if "\\boxed{1" in s.completion]
    _, keys = _page(run, "contains=%5Cboxed%7B1&ordering=-step", 2)
    assert keys == expected[25:50]


def test_a_common_word_walks_the_other_orders_indexes_too(run):
    for key in ("reward", "advantage", "length"):
        for desc in (False, True):
            rows = list(Sample.objects.filter(run=run))
            present = sorted((s for s in rows if getattr(s, key) is not None), key=lambda s: s.pk)
            present.sort(key=lambda s: getattr(s, key), reverse=desc)  # stable: ties by id
            absent = sorted((s for s in rows if getattr(s, key) is None), key=lambda s: s.pk)
            expected = [s.client_key for s in present + absent if "telescoping" in s.completion.split()]
            ordering = ("-" if desc else "") + key
            paginator, keys = _page(run, f"q=telescoping&ordering={ordering}", 2)
            assert paginator.mode == "walk" and keys == expected[25:50], ordering
