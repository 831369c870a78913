"""Hostile and malformed uploads (issue 11, point 11): every kind ends in a 400 (in the request) or a
`failed` dataset with its reason (in a worker), never a 500 or a dataset left `importing`, and the
uploaded file is removed either way. Concurrent uploads get distinct versions and one copy of a file."""

from __future__ import annotations

import io
import json
import threading
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.datasets import readers, services
from webapp.datasets.models import Dataset

GOOD = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "It is 5."}


def _jsonl(*rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _parquet(rows, **write) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, **write)
    return buf.getvalue()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _corrupt_page() -> bytes:
    # Overwrite the middle of the first column chunk's data: the footer still reads, the page does not.
    data = bytearray(_parquet([{**GOOD, "prompt": f"question number {i}" * 20} for i in range(300)],
                              compression="none", use_dictionary=False))  # fmt: skip
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0)
    start = meta.data_page_offset
    data[start + 4 : start + 40] = b"\xff" * 36
    return bytes(data)


# (filename, content, a phrase the reason holds, or alternatives: an empty file is refused by the
# API's form before the import sees it)
KINDS = {
    "parquet_truncated": ("t.parquet", lambda: _parquet([GOOD] * 10)[:-30], "Parquet"),
    "parquet_wrong_magic": ("m.parquet", lambda: b"PAR2" + _parquet([GOOD] * 10)[4:], "Parquet"),
    "parquet_corrupt_page": ("c.parquet", _corrupt_page, "Parquet"),
    "parquet_huge_cell": (
        "h.parquet",
        lambda: _parquet([{**GOOD, "chosen": "a" * (readers.MAX_RECORD_BYTES + 1)}], compression="zstd"),
        "larger than",
    ),
    "parquet_decimal_column": ("d.parquet", lambda: _parquet([{**GOOD, "price": Decimal("1.5")}]), "Decimal"),
    "parquet_empty": ("e.parquet", lambda: b"", ("empty", "no rows")),
    "jsonl_deep_nesting": (
        "d.jsonl",
        lambda: (
            _jsonl(GOOD)
            + (
                '{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"x": ' + _deep(100_000) + "}}\n"
            ).encode()
        ),
        "nested deeper than 64",
    ),  # fmt: skip
    "jsonl_nesting_65": (
        "n.jsonl",
        lambda: _jsonl({**GOOD, "metadata": {"x": json.loads(_deep(70))}}),
        "nested deeper than 64",
    ),
    "jsonl_huge_line": (
        "l.jsonl",
        lambda: _jsonl({**GOOD, "chosen": "a" * (readers.MAX_RECORD_BYTES + 10)}),
        "larger than",
    ),
    "jsonl_nul_in_metadata": ("z.jsonl", lambda: _jsonl({**GOOD, "metadata": {"k": "a\x00b"}}), "NUL"),
    "jsonl_lone_surrogate": (
        "s.jsonl",
        lambda: b'{"prompt": "p", "chosen": "a", "rejected": "b", "source": "x\\ud800"}\n',
        "surrogate",
    ),
    "jsonl_huge_integer": ("i.jsonl", lambda: _jsonl({**GOOD, "metadata": {"n": 2**60}}), "2^53"),
    "jsonl_empty": ("e.jsonl", lambda: b"", ("empty", "no rows")),
    "json_deep_nesting": (
        "d.json",
        lambda: (
            "["
            + json.dumps(GOOD)
            + ', {"prompt": "p", "chosen": "a", "rejected": "b", "metadata": '
            + "{"
            + '"a": {' * 5000
            + "}" * 5000
            + "}]"
        ).encode(),
        "nested deeper than 64",
    ),  # fmt: skip
    "json_invalid_utf8": (
        "u.json",
        lambda: b'[{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}]',
        "UTF-8",
    ),
    "json_truncated": ("t.json", lambda: b'[{"prompt": "p", "chosen": "a", "rejected": "b"}, {"pro', "JSON"),
    "json_trailing_garbage": ("g.json", lambda: json.dumps([GOOD]).encode() + b" {}", "JSON"),
    "json_empty": ("e.json", lambda: b"", ("empty", "no rows")),
    "csv_deep_json_cell": (
        "d.csv",
        lambda: ("prompt,chosen,rejected,metadata\np,a,b," + _deep(50_000) + "\n").encode(),
        "nested deeper than 64",
    ),
    "csv_more_values_than_columns": ("x.csv", lambda: b"prompt,chosen,rejected\np,a,b,c\n", "more values"),
    "csv_invalid_utf8": ("u.csv", lambda: b"prompt,chosen,rejected\ncaf\xe9,a,b\n", "UTF-8"),
    "csv_empty": ("e.csv", lambda: b"", ("empty", "no rows")),
}


def _uploads() -> set[Path]:
    d = Path(settings.ORLAB_ARTIFACTS) / "uploads"
    return set(d.iterdir()) if d.exists() else set()


def _says(text: str, phrase: str | tuple[str, ...]) -> bool:
    return any(p in text for p in ((phrase,) if isinstance(phrase, str) else phrase))


def _reasons(errors: dict) -> str:
    return json.dumps(errors)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_malformed_file_is_refused_with_its_reason_and_leaves_nothing(api, project, alice, tmp_path, kind):
    """In the request: a 400 naming the row or the file, no dataset, no file left. In a worker
    (the task function a large upload runs, here in this process): the dataset ends failed with
    the reason, and the file is removed."""
    from workers.tasks import import_dataset

    filename, build, phrase = KINDS[kind]
    content = build()
    before = _uploads()
    f = SimpleUploadedFile(filename, content)
    resp = api.post("/api/datasets/", {"file": f, "name": "bad", "kind": "preference", "project": project.id})
    assert resp.status_code == 400, resp.content[:500]
    errors = resp.json()["errors"]
    assert _says(_reasons(errors), phrase), errors
    assert not Dataset.objects.exists()
    assert _uploads() == before

    path = tmp_path / filename
    path.write_bytes(content)
    ds = services.dataset_create_for_import(
        user=alice, project=project, name="bad", kind="preference", path=path, filename=filename
    )
    import_dataset(ds.id, str(path))
    ds.refresh_from_db()
    assert ds.status == "failed", (ds.status, ds.error)
    assert _says(ds.error + json.dumps(ds.meta.get("row_errors")), phrase), ds.error
    assert ds.error.startswith("rejected, nothing was imported")
    assert not path.exists()


@pytest.mark.django_db
def test_parquet_column_chunk_beyond_the_cap_is_refused_before_reading(api, project, monkeypatch):
    """The metadata gives each column chunk's decompressed size: a chunk beyond the cap is refused
    without decompressing it (a 10 KB file can hold a 300 MB cell)."""
    monkeypatch.setattr(readers, "MAX_COLUMN_CHUNK_BYTES", 1 << 20)
    content = _parquet([{**GOOD, "chosen": "b" * (2 << 20)}], compression="zstd")
    assert len(content) < 10_000
    f = SimpleUploadedFile("big.parquet", content)
    resp = api.post("/api/datasets/", {"file": f, "name": "big", "kind": "preference", "project": project.id})
    assert resp.status_code == 400
    assert "column chosen" in _reasons(resp.json()["errors"]) and "MB" in _reasons(resp.json()["errors"])


@pytest.mark.django_db
def test_parquet_page_beyond_the_cap_is_refused_from_its_header(api, project, monkeypatch):
    """Page headers are read before pyarrow decompresses a page (pyarrow allocates what a page
    header says, whatever the footer's chunk sizes claim)."""
    monkeypatch.setattr(readers, "MAX_PAGE_BYTES", 1 << 20)
    content = _parquet([{**GOOD, "chosen": "c" * (2 << 20)}], compression="zstd", use_dictionary=False)
    f = SimpleUploadedFile("page.parquet", content)
    resp = api.post("/api/datasets/", {"file": f, "name": "pg", "kind": "preference", "project": project.id})
    assert resp.status_code == 400
    assert "a page of column chosen in row group 1 decompresses to 2.0 MB" in _reasons(resp.json()["errors"])


@pytest.mark.django_db
def test_parquet_chunk_with_too_many_values_is_refused_from_the_page_headers(api, project, monkeypatch):
    """A few bytes of run-length encoding can stand for billions of null list elements in one row,
    which pyarrow would decode whole: the values are counted from the page headers first."""
    monkeypatch.setattr(readers, "MAX_CHUNK_VALUES", 1000)
    nulls = pa.ListArray.from_arrays(pa.array([0, 5000], pa.int32()), pa.nulls(5000, pa.string()))
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["p"], "chosen": nulls, "rejected": ["r"]}), buf)
    f = SimpleUploadedFile("nulls.parquet", buf.getvalue())
    resp = api.post("/api/datasets/", {"file": f, "name": "nl", "kind": "preference", "project": project.id})
    assert resp.status_code == 400
    assert "column chosen.list.element in row group 1 holds more than 1,000 values" in _reasons(
        resp.json()["errors"]
    )


@pytest.mark.django_db
def test_parquet_dictionary_rows_import_in_bounded_slices(api, project, monkeypatch):
    """Many rows sharing one dictionary-encoded value import correctly (they are expanded a slice of
    rows at a time) and nested conversations survive the dictionary reading."""
    monkeypatch.setattr(readers, "PARQUET_SLICE_BYTES", 20_000)  # ~20 rows a slice: many slices a batch
    conv = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi " * 300}]
    rows = [{"chosen": conv, "rejected": "no", "source": "s", "n": i} for i in range(1200)]
    f = SimpleUploadedFile("dict.parquet", _parquet(rows, row_group_size=500))
    resp = api.post(
        "/api/datasets/", {"file": f, "name": "dict", "kind": "preference", "project": project.id}
    )
    assert resp.status_code == 201, resp.content[:500]
    assert resp.json()["row_count"] == 1200
    ds = Dataset.objects.get()
    pair = ds.pairs.get(row=1199)
    assert pair.chosen == conv and pair.prompt == "Say hi" and pair.metadata == {"n": 1199}
    assert list(ds.pairs.order_by("row").values_list("metadata__n", flat=True)) == list(range(1200))


def test_upload_beyond_the_size_limit_is_refused(api, project, settings):
    settings.ORLAB_MAX_UPLOAD_BYTES = 1000
    before = _uploads()
    f = SimpleUploadedFile("big.jsonl", _jsonl(*[GOOD] * 100))
    resp = api.post("/api/datasets/", {"file": f, "name": "big", "kind": "preference", "project": project.id})
    assert resp.status_code == 400 and "file" in resp.json()["errors"], resp.content
    assert "upload limit" in resp.json()["errors"]["file"][0]
    assert _uploads() == before


def _concurrently(n: int, fn) -> list:
    """Run fn(i) in n threads released together; each returns its value or the exception it raised."""
    from django.db import connection

    barrier = threading.Barrier(n)
    out: list = [None] * n

    def body(i):
        try:
            barrier.wait()
            out[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 (the test inspects what each thread got)
            out[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_of_one_file_store_one_copy(project, alice):
    content = _jsonl(*[{**GOOD, "prompt": f"q{i}"} for i in range(200)])

    def up(i):
        return services.dataset_upload(
            user=alice, project=project, name="same", kind="preference",
            upload=SimpleUploadedFile("same.jsonl", content),
        )  # fmt: skip

    results = _concurrently(6, up)
    unexpected = [
        r for r in results if isinstance(r, Exception) and not isinstance(r, services.ImportRejected)
    ]
    assert not unexpected, unexpected
    refused = [r for r in results if isinstance(r, services.ImportRejected)]
    assert all("file" in r.errors for r in refused), [r.errors for r in refused]
    assert Dataset.objects.filter(status="ready").count() == 1
    assert len(refused) == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_of_one_name_get_distinct_versions(project, alice):
    def up(i):
        content = _jsonl(*[{**GOOD, "prompt": f"file {i} question {j}"} for j in range(100)])
        return services.dataset_upload(
            user=alice, project=project, name="shared", kind="preference",
            upload=SimpleUploadedFile(f"f{i}.jsonl", content),
        )  # fmt: skip

    results = _concurrently(6, up)
    assert not [r for r in results if isinstance(r, Exception)], results
    versions = sorted(Dataset.objects.filter(name="shared").values_list("version", flat=True))
    assert versions == [1, 2, 3, 4, 5, 6]
    assert set(Dataset.objects.values_list("status", flat=True)) == {"ready"}


def test_step_values_file_with_deep_nesting_or_a_huge_line_is_refused(tmp_path):
    """A run's published step values go through the same bounded reader (was a RecursionError)."""
    from webapp.datasets.step_values import read_step_rows

    good = {"prompt": "p", "solution": "s", "steps": ["a"], "values": [0.5, 1.0]}
    path = tmp_path / "values.jsonl"
    path.write_bytes(_jsonl(good) + b'{"prompt": "p", "metadata": ' + _deep(50_000).encode() + b"}\n")
    with pytest.raises(services.ImportRejected) as err:
        read_step_rows(path)
    assert "line 2: nested deeper than 64" in err.value.errors["rows"][0]
    path.write_bytes(_jsonl({**good, "solution": "s" * (readers.MAX_RECORD_BYTES + 1)}))
    with pytest.raises(services.ImportRejected) as err:
        read_step_rows(path)
    assert "larger than" in err.value.errors["rows"][0]
    path.write_bytes(_jsonl(good, {**good, "metadata": {"k": "\x00"}}))
    with pytest.raises(services.ImportRejected) as err:
        read_step_rows(path)
    assert "NUL" in err.value.errors["rows"][0]


@pytest.mark.django_db
def test_small_file_with_large_rows_moves_from_the_request_to_a_worker(api, project, monkeypatch):
    """A few KB of Parquet can hold GBs of rows: past the request's text budget the request rolls
    back, answers 202 and a worker imports the file (it kept a gunicorn worker for minutes)."""
    from webapp.outbox.models import Message
    from workers.tasks import import_dataset

    monkeypatch.setattr(services, "SYNC_IMPORT_TEXT_BYTES", 50_000)
    rows = [{"prompt": f"q{i}", "chosen": "x" * 1000, "rejected": f"r{i}"} for i in range(300)]
    content = _parquet(rows, compression="zstd")
    assert len(content) < services.SYNC_IMPORT_BYTES
    f = SimpleUploadedFile("small.parquet", content)
    resp = api.post("/api/datasets/", {"file": f, "name": "sm", "kind": "preference", "project": project.id})
    assert resp.status_code == 202, resp.content[:300]
    ds = Dataset.objects.get(pk=resp.json()["id"])
    assert ds.status == "importing" and not ds.pairs.exists()
    message = Message.objects.get(task="workers.tasks.import_dataset")
    assert message.args[0] == ds.id and Path(message.args[1]).exists()
    import_dataset(*message.args)
    ds.refresh_from_db()
    assert ds.status == "ready" and ds.row_count == 300 and ds.pairs.count() == 300
    assert not Path(message.args[1]).exists()
