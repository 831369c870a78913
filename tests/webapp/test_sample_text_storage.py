"""Issue 14's storage of completion text (webapp.runs.sample_text, webapp.runs.sample_codec): zstd frames
with a per-run dictionary trained once by the batch that reaches TRAIN_AFTER completions; rows stored
as text before migration 0017 still read; word and substring search on compressed rows (indexed or
not yet, a literal with no word); the API, the samples page and the group page show the text; and the
storage of generated text against one zstd -3 stream of it (<= 1.5x)."""

from __future__ import annotations

import pytest
import zstandard
from django.db import connection
from django.http import QueryDict

from bench.bench_samples import Shape
from webapp.errors import ServiceError
from webapp.runs import sample_codec, sample_search, sample_text, services
from webapp.runs import samples as samples_mod
from webapp.runs.models import Sample, SampleTextDictionary
from webapp.runs.samples import samples_record
from webapp.selectors import samples as sq
from webapp.selectors.samples import SampleQuery

pytestmark = pytest.mark.django_db

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
]


def _text(i: int, n: int = 80) -> str:
    words = [WORDS[(i * 7 + k * k) % len(WORDS)] for k in range(n)]
    return " ".join(words) + f" so the answer is \\boxed{{{i % 97}}}."


def _rows(step: int, texts: list[str], prefix: str = "") -> list[dict]:
    return [
        {"step": step, "prompt": f"Problem {i % 5}", "completion": t, "reward": float(i % 2), "verdict": "wrong",
         "group_index": i // 4, "member_index": i % 4, "client_key": f"{prefix}s{step}m{i}"}
        for i, t in enumerate(texts)
    ]  # fmt: skip


@pytest.fixture
def run(alice, project):
    return services.run_create(user=alice, project=project, name="rl", kind="external", config={})


@pytest.fixture
def small_train(monkeypatch):
    """A dictionary after 200 completions (the default 1,000 makes these tests slow)."""
    monkeypatch.setattr(sample_text, "TRAIN_AFTER", 200)


def texts_of(run) -> dict[str, str]:
    return {s.client_key: s.completion for s in Sample.objects.filter(run=run)}


def found(run, query: str) -> list[str]:
    state = SampleQuery(QueryDict(query), run, strict=True)
    page = state.paginator(state.queryset(), 50).page(1)
    return sorted(s.client_key for s in page.object_list)


# --- the codec ----------------------------------------------------------------------------------------------


def test_codec_round_trip_with_and_without_a_dictionary():
    texts = [_text(i) for i in range(300)] + ["", "ünïcødé ✓ \\boxed{42}", "x" * 10_000]
    plain = sample_codec.Codec()
    assert [plain.decompress(f) for f in plain.compress_many(texts)] == texts
    assert plain.compress("") == b""
    data = sample_codec.train(texts)
    assert data is not None and len(data) <= sample_codec.DICT_BYTES
    with_dict = sample_codec.Codec(data)
    frames = with_dict.compress_many(texts)
    assert [with_dict.decompress(f) for f in frames] == texts
    # each frame is a standard zstd frame (random access): zstd with the same dictionary reads it
    d = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))
    assert d.decompress(frames[5]).decode() == texts[5]
    assert sum(map(len, frames)) < sum(map(len, plain.compress_many(texts)))
    assert sample_codec.train(["too few"] * 10) is None


# --- ingest: the dictionary ---------------------------------------------------------------------------------


def test_the_dictionary_is_trained_once_by_the_batch_that_reaches_the_threshold_and_used(run, small_train):
    first = [_text(i) for i in range(150)]
    samples_record(run, _rows(0, first))
    assert not SampleTextDictionary.objects.filter(run=run).exists()  # 150 < 200: plain frames
    assert set(Sample.objects.filter(run=run).values_list("completion_dict", flat=True)) == {0}
    second = [_text(i) for i in range(150, 300)]
    samples_record(run, _rows(1, second))  # 300 >= 200: this batch trains
    (dictionary,) = SampleTextDictionary.objects.filter(run=run)
    assert set(Sample.objects.filter(run=run, step=1).values_list("completion_dict", flat=True)) == {
        dictionary.pk
    }
    third = [_text(i) for i in range(300, 400)]
    samples_record(run, _rows(2, third))
    assert SampleTextDictionary.objects.filter(run=run).count() == 1  # trained once
    assert set(Sample.objects.filter(run=run, step=2).values_list("completion_dict", flat=True)) == {
        dictionary.pk
    }
    # every new row keeps a frame and no text; reading a Sample decodes it
    assert not Sample.objects.filter(run=run).exclude(completion="").exists()
    assert not Sample.objects.filter(run=run, completion_z__isnull=True).exists()
    stored = texts_of(run)
    assert [stored[f"s0m{i}"] for i in range(150)] == first
    assert [stored[f"s1m{i}"] for i in range(150)] == second
    assert [stored[f"s2m{i}"] for i in range(100)] == third
    # a process that has not cached the run's dictionary reads it from the table
    sample_text._data.clear()
    sample_text._of_run.clear()
    assert Sample.objects.get(run=run, client_key="s2m7").completion == third[7]
    assert sample_text.dictionary_of(run.pk) == dictionary.pk
    # a second run trains its own
    other = services.run_create(
        user=run.created_by, project=run.project, name="rl2", kind="external", config={}
    )
    samples_record(other, _rows(0, [_text(i) for i in range(250)]))
    assert SampleTextDictionary.objects.filter(run=other).count() == 1
    # the earlier rows' plain frames rewritten with the dictionary, same text
    assert sample_text.recompress_run(run.pk) == 150
    assert set(Sample.objects.filter(run=run).values_list("completion_dict", flat=True)) == {dictionary.pk}
    assert texts_of(run) == stored


def test_a_batch_finding_the_training_lock_taken_goes_without(run, small_train):
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", [sample_text.LOCK_CLASS, run.pk % 2**31])
        samples_record(run, _rows(0, [_text(i) for i in range(250)]))
        assert not SampleTextDictionary.objects.filter(run=run).exists()
        assert set(Sample.objects.filter(run=run).values_list("completion_dict", flat=True)) == {0}
    finally:
        other.close()
    samples_record(run, _rows(1, [_text(i) for i in range(10)]))  # the next batch trains
    assert SampleTextDictionary.objects.filter(run=run).count() == 1
    assert len(texts_of(run)) == 260


def _make_legacy(sample_id: int, text: str) -> None:
    """A row as stored before migration 0017: the text in ``completion``, no frame."""
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE runs_sample SET completion = %s, completion_z = NULL, completion_dict = 0 WHERE id = %s",
            [text, sample_id],
        )


def test_text_rows_stored_before_the_migration_still_read_and_are_found(run, api, client, alice):
    samples_record(run, _rows(0, ["the quokka says \\boxed{7}", "a numbat wrote this", "nothing"]))
    legacy = Sample.objects.get(run=run, client_key="s0m1")
    _make_legacy(legacy.pk, "a legacy wombat wrote this \\boxed{9}")
    assert Sample.objects.get(pk=legacy.pk).completion == "a legacy wombat wrote this \\boxed{9}"
    assert found(run, "q=wombat") == ["s0m1"]  # not indexed yet: matched directly
    assert found(run, "contains=LEGACY wom") == ["s0m1"]
    sample_search.index_pending()
    assert found(run, "q=wombat") == ["s0m1"]
    assert found(run, "contains=wombat wrote") == ["s0m1"]
    body = api.get(f"/api/runs/{run.id}/samples/?q=wombat").json()
    assert [r["completion"] for r in body["results"]] == ["a legacy wombat wrote this \\boxed{9}"]
    assert sample_text.recompress_run(run.pk) == 0  # no dictionary: nothing to rewrite


# --- searches on compressed rows ------------------------------------------------------------------------------


def test_word_and_substring_search_on_compressed_rows_before_and_after_indexing(run, small_train):
    texts = [_text(i) for i in range(240)]
    texts[17] = "the quokka says \\boxed{777} " + texts[17]
    texts[201] = texts[201] + " Quokkas everywhere; a_b and 50%"
    samples_record(run, _rows(0, texts))
    assert Sample.objects.filter(run=run).exclude(completion_dict=0).count() == 240  # compressed, dictionary
    for indexed in (False, True):
        if indexed:
            assert sample_search.index_pending() == 240
        assert found(run, "q=quokka") == ["s0m17"]
        assert found(run, 'q="quokka says"') == ["s0m17"]
        assert found(run, "contains=quokka") == ["s0m17", "s0m201"]
        assert found(run, "contains=\\boxed{777}") == ["s0m17"]
        assert found(run, "contains=a_b and 50%") == ["s0m201"]  # % and _ literal
        # no word token to prefilter on (the first word may be a word's tail): every row decoded, in order
        state = SampleQuery(QueryDict("contains=okka"), run, strict=True)
        assert state.contains_tsquery() == ""
        assert found(run, "contains=okka") == ["s0m17", "s0m201"]
        assert found(run, "contains=uokkas ev") == ["s0m201"]
        assert found(run, "contains=zzzq") == []


def test_a_substring_scan_pages_in_order_and_counts_what_it_saw(run, small_train):
    texts = [_text(i) for i in range(240)]
    samples_record(run, _rows(0, texts))
    # "eta" is in most texts (no word token: it may be the tail of "beta", "zeta", "theta")
    state = SampleQuery(QueryDict("contains=eta"), run, strict=True)
    assert state.contains_tsquery() == ""
    expected = [i for i, t in enumerate(texts) if "eta" in t]
    assert len(expected) > 60
    p = state.paginator(state.queryset().only("id"), 25)
    page2 = p.page(2)
    ids = dict(Sample.objects.filter(run=run).values_list("id", "client_key"))
    assert [ids[s.pk] for s in page2.object_list] == [f"s0m{i}" for i in expected[25:50]]
    assert p.capped and p.shown_count == 50  # "50+"


def test_a_scan_past_its_time_limit_is_a_400_on_contains(run, small_train, monkeypatch, api):
    samples_record(run, _rows(0, [_text(i) for i in range(240)]))
    monkeypatch.setattr(sq, "SCAN_TIMEOUT_MS", 0)
    state = SampleQuery(QueryDict("contains=zzzq"), run, strict=True)
    with pytest.raises(ServiceError) as err:
        state.paginator(state.queryset(), 50).page(1)
    assert "contains" in err.value.field_errors
    resp = api.get(f"/api/runs/{run.id}/samples/?contains=zzzq")
    assert resp.status_code == 400 and "contains" in str(resp.json())


# --- the readers show the text --------------------------------------------------------------------------------


def test_the_api_the_samples_page_and_the_group_page_show_the_text(run, api, client, alice, small_train):
    texts = [_text(i, n=120) for i in range(240)]
    samples_record(run, _rows(3, texts))
    body = api.get(f"/api/runs/{run.id}/samples/?page_size=100").json()
    assert [r["completion"] for r in body["results"]] == texts[:100]  # step order: group, member
    group = api.get(f"/api/runs/{run.id}/samples/groups/3/0/").json()
    assert [m["completion"] for m in group["members"]] == texts[:4]
    client.force_login(alice)
    html = client.get(f"/runs/{run.id}/samples/").content.decode()
    assert texts[0][: sq.PREVIEW_CHARS] in html and texts[0][-sq.PREVIEW_CHARS :] in html
    html = client.get(f"/runs/{run.id}/samples/group/3/0/").content.decode()
    assert texts[2] in html


def test_the_list_preview_reads_head_and_tail_from_the_decoded_text(run, small_train):
    texts = ["short one", "m" * 200 + "END", "h" * 160 + "x" * 200 + "t" * 160]
    samples_record(run, _rows(0, texts))
    rows = sq.list_rows(
        list(Sample.objects.filter(run=run).order_by("member_index").values_list("id", flat=True))
    )
    assert [sq.row_preview(r) for r in rows] == [texts[0], texts[1], "h" * 160 + " … " + "t" * 160]


# --- storage ---------------------------------------------------------------------------------------------------


def test_storage_of_generated_text_is_at_most_1_5x_one_zstd_3_stream(run):
    """The bench's text generator (Zipf words, compresses like prose), 3 ingest batches of 1,000: the
    frames, the leftover text and the dictionary, against one zstd -3 stream of the same text."""
    shape = Shape(50_000)
    samples: list[dict] = []
    step = 0
    while len(samples) < 3_000:
        samples.extend(shape.step_samples(step))
        step += 1
    samples = samples[:3_000]
    for i, s in enumerate(samples):
        s["client_key"] = f"k{i}"
    for k in range(3):
        samples_record(run, samples[k * 1000 : (k + 1) * 1000])
    raw = "".join(s["completion"] for s in samples).encode()
    stream = len(zstandard.ZstdCompressor(level=3).compress(raw))
    with connection.cursor() as cur:
        cur.execute(
            "SELECT sum(coalesce(pg_column_size(completion_z), 0) + pg_column_size(completion)) FROM runs_sample "
            "WHERE run_id = %s",
            [run.pk],
        )
        stored = cur.fetchone()[0]
        cur.execute(
            "SELECT coalesce(sum(octet_length(data)), 0) FROM runs_sampletextdictionary WHERE run_id = %s",
            [run.pk],
        )
        dictionaries = cur.fetchone()[0]
    ratio = (stored + dictionaries) / stream
    assert SampleTextDictionary.objects.filter(run=run).count() == 1
    assert ratio <= 1.5, (
        f"{ratio:.2f}x zstd -3 ({stored:,} + {dictionaries:,} dictionary bytes vs {stream:,})"
    )
    assert texts_of(run)["k2999"] == samples[2999]["completion"]


def test_sqlite_path_is_untouched_by_compression():
    """The embedded mode (SQLite) keeps text: compression is PostgreSQL's path only."""
    assert sample_text.enabled() == (connection.vendor == "postgresql")
    assert "completion_z" in samples_mod.COPY_COLUMNS
