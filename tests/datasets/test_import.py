"""Importing preference pairs and problems through the API: formats, row errors, all-or-nothing,
versions, re-import detection, access."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.datasets.models import Dataset, PreferencePair, Problem

pytestmark = pytest.mark.django_db


def pairs(n=5, source="helpsteer2"):
    return [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"It is {2 * i + 1}.",
         "source": source}
        for i in range(n)
    ]  # fmt: skip


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(api, project, content: bytes, filename="pairs.jsonl", name="prefs", kind="preference"):
    f = SimpleUploadedFile(filename, content)
    return api.post("/api/datasets/", {"file": f, "name": name, "kind": kind, "project": project.id})


def test_jsonl_import_stores_every_pair(api, project):
    resp = upload(api, project, jsonl(pairs(5)))
    assert resp.status_code == 201, resp.content
    data = resp.json()
    assert (
        data["status"] == "ready"
        and data["row_count"] == 5
        and data["version"] == 1
        and len(data["sha256"]) == 64
    )
    listed = api.get(f"/api/datasets/{data['id']}/pairs/").json()
    assert listed["count"] == 5
    first = listed["results"][0]
    assert (
        first["prompt"] == "What is 0 plus 0?"
        and first["chosen"] == "It is 0."
        and first["source"] == "helpsteer2"
    )


def test_chat_conversations_derive_the_prompt(api, project):
    conv = lambda answer: [  # noqa: E731
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": answer},
    ]
    resp = upload(api, project, jsonl([{"chosen": conv("Paris."), "rejected": conv("Lyon.")}]))
    assert resp.status_code == 201, resp.content
    pair = PreferencePair.objects.get()
    assert pair.prompt == "Be brief.\n\nCapital of France?"
    assert pair.chosen[-1]["content"] == "Paris." and pair.chosen_text == "Paris." and pair.rejected_len == 5


def test_csv_json_and_parquet(api, project, tmp_path):
    rows = pairs(3)
    csv_text = "prompt,chosen,rejected,source\n" + "".join(
        f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}",{r["source"]}\n' for r in rows
    )
    assert upload(api, project, csv_text.encode(), "p.csv", name="c").json()["row_count"] == 3
    assert upload(api, project, json.dumps(pairs(4)).encode(), "p.json", name="j").json()["row_count"] == 4
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(pairs(6)), path)
    assert upload(api, project, path.read_bytes(), "p.parquet", name="pq").json()["row_count"] == 6


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ('{"prompt": "p", "chosen": "a"}', "missing field 'rejected'"),
        ('{"prompt": "p", "chosen": " ", "rejected": "b"}', "empty text: chosen"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "chosen identical to rejected"),
        ('{"prompt": "p", "chosen": [{"role": "user"}], "rejected": "b"}', "malformed messages"),
        ('{"prompt": "p", "chosen": [{"role": "user", "content": "hi"}], "rejected": "b"}', "last message"),
        ('{"prompt": "p", "chosen": 3, "rejected": "b"}', "must be text or a list of messages"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b"', "invalid JSON"),
        ('["not", "an", "object"]', "not an object"),
    ],
)
def test_a_bad_row_rejects_the_file_with_its_line(api, project, bad_line, expected):
    content = jsonl(pairs(2)) + bad_line.encode() + b"\n" + jsonl(pairs(2))
    resp = upload(api, project, content)
    assert resp.status_code == 400
    errors = resp.json()["errors"]
    assert list(errors) == ["line 3"], errors
    assert expected in errors["line 3"][0]
    assert not Dataset.objects.exists() and not PreferencePair.objects.exists()


def test_bad_encoding_is_reported_with_its_line(api, project):
    content = jsonl(pairs(1)) + '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1")
    resp = upload(api, project, content)
    assert resp.status_code == 400 and "bad encoding" in resp.json()["errors"]["line 2"][0]


def test_many_bad_rows_report_the_first_twenty(api, project):
    content = jsonl([{"prompt": "p", "chosen": "x", "rejected": "x"}] * 50)
    errors = upload(api, project, content).json()["errors"]
    assert len(errors) == 20 and "line 1" in errors and "line 20" in errors


def test_reimporting_the_same_file_is_detected_and_a_new_file_is_a_new_version(api, project):
    content = jsonl(pairs(3))
    assert upload(api, project, content).status_code == 201
    again = upload(api, project, content)
    assert again.status_code == 400 and "already imported as prefs v1" in again.json()["errors"]["file"][0]
    v2 = upload(api, project, jsonl(pairs(4))).json()
    assert v2["version"] == 2 and v2["row_count"] == 4


def test_unknown_format_and_empty_file(api, project):
    assert "file" in upload(api, project, b"x", "data.txt").json()["errors"]
    assert upload(api, project, b"\n\n").status_code == 400


def test_problem_import_math_and_code(api, project):
    rows = [
        {"prompt": "2+3=?", "answer": "5"},
        {"prompt": "print the sum", "tests": [{"stdin": "1 2", "stdout": "3"}]},
        {"prompt": "def f", "domain": "code", "tests": [{"call": "f(2)", "expected": 4}]},
    ]
    resp = upload(api, project, jsonl(rows), name="probs", kind="problems")
    assert resp.status_code == 201, resp.content
    assert [p.domain for p in Problem.objects.order_by("row")] == ["math", "code", "code"]
    listed = api.get(f"/api/datasets/{resp.json()['id']}/problems/?domain=code").json()
    assert listed["count"] == 2
    bad = upload(
        api, project, jsonl([{"prompt": "x", "tests": [{"call": "f()"}]}]), name="b", kind="problems"
    )
    assert bad.status_code == 400 and "expected" in bad.json()["errors"]["line 1"][0]
    assert (
        "answer"
        in upload(api, project, jsonl([{"prompt": "x"}]), name="c", kind="problems").json()["errors"][
            "line 1"
        ][0]
    )


def test_search_filter_and_ordering(api, project):
    rows = pairs(3) + [
        {"prompt": "Explain photosynthesis", "chosen": "Plants convert light.", "rejected": "No idea.",
         "source": "magpie"},
    ]  # fmt: skip
    ds = upload(api, project, jsonl(rows)).json()["id"]
    found = api.get(f"/api/datasets/{ds}/pairs/?search=photosynthesis").json()
    assert [p["source"] for p in found["results"]] == ["magpie"]
    assert (
        api.get(f"/api/datasets/{ds}/pairs/?search=light").json()["count"] == 1
    )  # chosen text is searched too
    assert api.get(f"/api/datasets/{ds}/pairs/?source=helpsteer2").json()["count"] == 3
    rows_desc = [p["row"] for p in api.get(f"/api/datasets/{ds}/pairs/?ordering=-row").json()["results"]]
    assert rows_desc == [3, 2, 1, 0]
    assert api.get(f"/api/datasets/{ds}/pairs/?ordering=bogus").status_code == 400


def test_other_users_cannot_see_or_upload(api, bob_api, project):
    ds = upload(api, project, jsonl(pairs(2))).json()["id"]
    assert bob_api.get(f"/api/datasets/{ds}/").status_code == 404
    assert bob_api.get(f"/api/datasets/{ds}/pairs/").status_code == 404
    assert bob_api.get("/api/datasets/").json()["count"] == 0
    resp = upload(bob_api, project, jsonl(pairs(2, source="x")))
    assert resp.status_code == 400 and "project" in resp.json()["errors"]


def _stale_search_vectors() -> int:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM datasets_preferencepair "
            "WHERE search IS DISTINCT FROM to_tsvector('english', prompt || ' ' || chosen_text)"
        )
        return cur.fetchone()[0]


def test_search_vectors_from_the_import_the_orm_and_edits_agree(api, project):
    # The import computes the vectors on a second connection (more rows than one of its batches,
    # chat rows among them); every other writer gets them from the table's trigger.
    def conv(i, answer):
        return [{"role": "user", "content": f"Tell me fact {i}"}, {"role": "assistant", "content": answer}]

    rows = pairs(1500) + [
        {"chosen": conv(i, "Whales sing."), "rejected": conv(i, "Fish fly.")} for i in range(3)
    ]
    ds = upload(api, project, jsonl(rows)).json()["id"]
    assert PreferencePair.objects.filter(dataset_id=ds).count() == 1503
    assert _stale_search_vectors() == 0
    assert api.get(f"/api/datasets/{ds}/pairs/?search=whales").json()["count"] == 3
    assert api.get(f"/api/datasets/{ds}/pairs/?search=plus").json()["count"] == 1500

    PreferencePair.objects.create(
        dataset_id=ds,
        row=2000,
        prompt="Name a red planet",
        chosen="Mars.",
        rejected="Venus.",
        chosen_text="Mars.",
    )
    PreferencePair.objects.filter(dataset_id=ds, row=0).update(prompt="Describe volcanoes")
    assert _stale_search_vectors() == 0
    assert [p["row"] for p in api.get(f"/api/datasets/{ds}/pairs/?search=planet").json()["results"]] == [2000]
    assert [p["row"] for p in api.get(f"/api/datasets/{ds}/pairs/?search=volcano").json()["results"]] == [0]
