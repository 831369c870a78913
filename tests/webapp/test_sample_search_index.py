"""The completions' full-text index written after ingest commits (webapp.runs.sample_search): a search
right after ingest finds the rows not indexed yet, and after the indexer ran it finds them through the
index; the indexer is idempotent and restart-safe; the vectors go with their samples; the indexer
thread started by a committed batch drains the queue on its own."""

from __future__ import annotations

import time

import pytest
from django.db import connection, transaction
from django.http import QueryDict

from webapp.runs import sample_search, services
from webapp.runs.models import Sample, SampleSearch, SampleSearchPending
from webapp.runs.samples import samples_record
from webapp.selectors.samples import SampleQuery

pytestmark = pytest.mark.django_db


def _rows(step: int, texts: list[str]) -> list[dict]:
    return [
        {"step": step, "prompt": "Add the numbers.", "completion": text, "reward": 1.0, "verdict": "correct",
         "group_index": 0, "member_index": i, "client_key": f"s{step}m{i}"}
        for i, text in enumerate(texts)
    ]  # fmt: skip


@pytest.fixture
def run(alice, project):
    return services.run_create(user=alice, project=project, name="rl", kind="external", config={})


def found(run, query: str) -> list[str]:
    sq = SampleQuery(QueryDict(query), run, strict=True)
    page = sq.paginator(sq.queryset(), 50).page(1)
    return sorted(s.client_key for s in page.object_list)


def test_a_search_right_after_ingest_finds_the_rows_not_indexed_yet(run):
    samples_record(run, _rows(0, ["the quokka says \\boxed{7}", "nothing here", "two quokkas"]))
    assert SampleSearch.objects.filter(run_id=run.pk).count() == 0  # nothing indexed: only queued
    assert sample_search.lag(run.pk) >= 3
    assert found(run, "q=quokka") == ["s0m0"]
    assert found(run, "contains=quokka") == ["s0m0", "s0m2"]
    assert found(run, "contains=\\boxed{7}") == ["s0m0"]


def test_after_the_indexer_ran_the_index_answers(run):
    samples_record(run, _rows(0, ["the quokka says \\boxed{7}", "nothing here"]))
    assert sample_search.index_pending() == 2
    assert not SampleSearchPending.objects.filter(run_id=run.pk).exists()
    assert found(run, "q=quokka") == ["s0m0"]
    assert found(run, "contains=says \\boxed") == ["s0m0"]
    # the answer comes from the stored vector: emptied, the row is no longer found by its words
    with connection.cursor() as cur:
        cur.execute("UPDATE runs_samplesearch SET tsv = ''::tsvector WHERE sample_id = %s",
                    [Sample.objects.get(run=run, client_key="s0m0").pk])  # fmt: skip
    assert found(run, "q=quokka") == []


def test_indexed_and_queued_rows_are_found_together_in_both_plans(run):
    samples_record(run, _rows(0, [f"common word {i}" for i in range(400)]))
    sample_search.index_pending()
    with connection.cursor() as cur:
        cur.execute("ANALYZE runs_samplesearch")
    samples_record(run, _rows(1, ["common again", "rare ocelot"]))  # queued, not indexed
    sq = SampleQuery(QueryDict("q=common"), run, strict=True)
    paginator = sq.paginator(sq.queryset(), 50)
    assert paginator.mode == "walk"  # every indexed row has the word: the planner's estimate says many
    page = paginator.page(1)
    assert len(page.object_list) == 50 and paginator.capped  # walked: "50+"
    assert "s1m0" in found(run, "q=common&step=1")
    sq = SampleQuery(QueryDict("q=ocelot"), run, strict=True)
    paginator = sq.paginator(sq.queryset(), 50)
    assert paginator.mode == "bitmap"  # a word absent from the statistics: few
    assert [s.client_key for s in paginator.page(1).object_list] == ["s1m1"]


def test_the_indexer_is_idempotent_and_restart_safe(run):
    samples_record(run, _rows(0, ["alpha beta", "gamma"]))
    # a crash inside the indexer's transaction: nothing written, the batch stays queued
    with pytest.raises(RuntimeError), transaction.atomic():
        sample_search.index_pending()
        assert SampleSearch.objects.filter(run_id=run.pk).count() == 2
        raise RuntimeError("worker died")
    assert SampleSearch.objects.filter(run_id=run.pk).count() == 0
    assert SampleSearchPending.objects.filter(run_id=run.pk).count() == 1
    assert sample_search.index_pending() == 2
    assert sample_search.index_pending() == 0  # nothing left
    # the same range queued again (a batch re-sent, a sweeper's second pass): no duplicate, no error
    ids = list(Sample.objects.filter(run=run).values_list("id", flat=True))
    SampleSearchPending.objects.create(run_id=run.pk, first_id=min(ids), last_id=max(ids))
    assert sample_search.index_pending() == 0
    assert SampleSearch.objects.filter(run_id=run.pk).count() == 2
    assert found(run, "q=alpha") == ["s0m0"]


def test_a_batch_that_commits_after_a_later_one_is_still_indexed(run, alice, project):
    """Ids are drawn before COPY, so batches commit out of id order: each batch is queued on its own."""
    other = services.run_create(user=alice, project=project, name="rl2", kind="external", config={})
    samples_record(run, _rows(0, ["first batch words"]))
    sample_search.index_pending()
    samples_record(other, _rows(0, ["other run words"]))
    samples_record(run, _rows(1, ["second batch words"]))
    assert sample_search.index_pending() == 2
    assert found(run, "q=words") == ["s0m0", "s1m0"]
    assert found(other, "q=words") == ["s0m0"]


def test_the_vectors_go_with_their_samples(run):
    samples_record(run, _rows(0, ["alpha", "beta"]))
    sample_search.index_pending()
    with connection.cursor() as cur:  # retention and a resume delete samples with raw SQL
        cur.execute("DELETE FROM runs_sample WHERE run_id = %s AND client_key = 's0m0'", [run.pk])
    assert list(SampleSearch.objects.filter(run_id=run.pk).values_list("sample__client_key", flat=True)) == [
        "s0m1"
    ]


@pytest.mark.django_db(transaction=True)
def test_a_committed_batch_starts_the_indexer_thread(alice, project):
    run = services.run_create(user=alice, project=project, name="rl", kind="external", config={})
    samples_record(run, _rows(0, ["the quokka"] * 5))
    deadline = time.monotonic() + 30
    while SampleSearch.objects.filter(run_id=run.pk).count() < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert SampleSearch.objects.filter(run_id=run.pk).count() == 5
    assert not SampleSearchPending.objects.filter(run_id=run.pk).exists()
    assert len(found(run, "q=quokka")) == 5


@pytest.mark.django_db(transaction=True)
def test_a_closed_sink_leaves_its_run_indexed(alice, project, settings):
    """A trainer's process may end right after close(): the sink indexes its run's rows itself."""
    from webapp.runs.models import Run
    from workers.sinks import DbSink

    settings.ORLAB_SINK_FLUSH_INTERVAL = 0.1
    running = Run.objects.create(
        project=project, name="r", kind="synthetic", status="running", created_by=alice, attempt=1
    )
    sink = DbSink(running.id, 1)
    sink.log_samples(3, _rows(3, ["a quokka", "an ocelot"]))
    sink.close()
    assert not SampleSearchPending.objects.filter(run_id=running.pk).exists()
    assert SampleSearch.objects.filter(run_id=running.pk).count() == 2
    assert found(running, "q=ocelot") == ["orlab:a1:s3:1"]  # the sink keys its samples


def test_the_housekeeping_sweep_indexes_what_dead_processes_left(run):
    samples_record(run, _rows(0, ["left behind"]))  # no commit hook in this test: like a killed process
    assert sample_search.sweep() == 1
    assert sample_search.lag() == 0


def test_the_api_finds_a_batch_it_just_stored(api, run):
    resp = api.post(
        f"/api/runs/{run.id}/samples/",
        {"samples": _rows(5, ["a quokka in \\boxed{9}", "an ocelot"])},
        format="json",
    )
    assert resp.status_code == 200, resp.content
    assert sample_search.lag(run.pk) >= 2  # queued, not indexed: the request returned before the indexer
    for query, expected in (
        ("q=quokka", ["s5m0"]),
        ("contains=%5Cboxed%7B9%7D", ["s5m0"]),
        ("q=ocelot", ["s5m1"]),
    ):
        body = api.get(f"/api/runs/{run.id}/samples/?{query}").json()
        keys = dict(Sample.objects.filter(run=run).values_list("id", "client_key"))
        assert [keys[r["id"]] for r in body["results"]] == expected, query
