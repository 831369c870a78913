"""The dataset pages through Django's test client: access, upload (good, bad, background), the dataset
page (facts, progress, errors, curation summary, problems), the pair browser (search, filters, reward
model margins and sorting, shareable state), the pair view (rendering, escaping, diff, conversations,
scores, neighbours) and the curation form."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset, PairScore, PreferencePair, Problem
from webapp.projects.services import project_create
from webapp.runs import services as run_services
from webapp.runs.models import Checkpoint
from webapp.ui.text_render import render_markdown, word_diff

pytestmark = pytest.mark.django_db


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def simple_pairs(n=5, source="helpsteer2"):
    return [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"It is {2 * i + 1}.",
         "source": source}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_dataset(project, user, name="prefs", kind="preference", **fields) -> Dataset:
    fields.setdefault("status", Dataset.Status.READY)
    fields.setdefault("sha256", "ab" * 32)
    fields.setdefault("meta", {"format": "jsonl", "filename": f"{name}.jsonl", "bytes": 2048})
    return Dataset.objects.create(project=project, created_by=user, name=name, kind=kind, **fields)


def add_pair(dataset, row, prompt, chosen, rejected, source="helpsteer2", **fields) -> PreferencePair:
    text = lambda side: side[-1]["content"] if isinstance(side, list) else side  # noqa: E731
    return PreferencePair.objects.create(
        dataset=dataset, row=row, prompt=prompt, chosen=chosen, rejected=rejected, source=source,
        chosen_text=text(chosen), rejected_text=text(rejected), chosen_len=len(text(chosen)),
        rejected_len=len(text(rejected)), **fields,
    )  # fmt: skip


@pytest.fixture
def browse(project, alice):
    """A preference set of 6 pairs from two sources, one dropped by curation, and a reward model
    (a checkpoint of an external run) that scored four of them."""
    ds = make_dataset(project, alice, row_count=6)
    rows = [
        ("Explain photosynthesis to a child", "Plants use sunlight to make food.", "Plants eat dirt.", "helpsteer2"),
        ("What is the capital of France?", "The capital is Paris.", "The capital is Lyon.", "helpsteer2"),
        ("Write a haiku about rain", "Soft rain on the roof, quiet streets shine.", "Rain.", "magpie"),
        ("How do vaccines work?", "They train the immune system with a harmless piece.", "Magic.", "magpie"),
        ("Sum 2 and 2", "Four, because two plus two is four.", "Five.", "magpie"),
        ("Describe photosynthesis in detail", "Light reactions then the Calvin cycle.", "Photo stuff.", "helpsteer2"),
    ]  # fmt: skip
    pairs = [add_pair(ds, i, p, c, r, s) for i, (p, c, r, s) in enumerate(rows)]
    PreferencePair.objects.filter(pk=pairs[3].pk).update(kept=False, drop_reason="near_dedup")
    run = run_services.run_create(user=alice, project=project, name="rm-run", kind="external", config={})
    ckpt = Checkpoint.objects.create(run=run, step=300, path="/tmp/rm-300")
    other = Checkpoint.objects.create(run=run, step=100, path="/tmp/rm-100")  # scored nothing here
    for pair, margin in zip(pairs[:4], [0.5, -1.25, 2.0, 0.1], strict=True):
        PairScore.objects.create(pair=pair, checkpoint=ckpt, chosen=margin + 1.0, rejected=1.0, margin=margin)
    return {"dataset": ds, "pairs": pairs, "ckpt": ckpt, "unused": other, "run": run}


def rows_of(html: str) -> list[int]:
    return [int(r) for r in re.findall(r'data-testid="pair-row" data-row="(\d+)"', html)]


def strip_marks(html: str) -> str:
    return re.sub(r'<(ins|del) class="diff">|</(ins|del)>', "", html)


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


# --- access ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/projects/1/datasets/",
        "/datasets/1/",
        "/datasets/1/pairs/",
        "/datasets/1/pairs/0/",
        "/datasets/1/curate/",
    ],
)
def test_dataset_pages_redirect_anonymous_users_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_non_member_gets_404_on_every_dataset_page(client_bob, browse, project):
    ds = browse["dataset"]
    for url in [
        f"/projects/{project.pk}/datasets/",
        f"/datasets/{ds.pk}/",
        f"/datasets/{ds.pk}/pairs/",
        f"/datasets/{ds.pk}/pairs/0/",
        f"/datasets/{ds.pk}/curate/",
    ]:
        assert client_bob.get(url).status_code == 404, url
    upload = SimpleUploadedFile("p.jsonl", jsonl(simple_pairs(2)))
    resp = client_bob.post(
        f"/projects/{project.pk}/datasets/", {"file": upload, "name": "x", "kind": "preference"}
    )
    assert resp.status_code == 404
    assert client_bob.post(f"/datasets/{ds.pk}/curate/", {"recipe": "{}"}).status_code == 404
    assert Dataset.objects.count() == 1


def test_wrong_kind_and_missing_rows_are_404(client_alice, project, alice, browse):
    problems = make_dataset(project, alice, name="probs", kind="problems")
    assert client_alice.get(f"/datasets/{problems.pk}/pairs/").status_code == 404
    assert client_alice.get(f"/datasets/{problems.pk}/curate/").status_code == 404
    assert client_alice.get(f"/datasets/{browse['dataset'].pk}/pairs/99/").status_code == 404


def test_csrf_is_enforced_on_the_upload_and_curate_forms(alice, project, browse):
    c = Client(enforce_csrf_checks=True)
    c.force_login(alice)
    url = f"/projects/{project.pk}/datasets/"

    def form():
        return {
            "file": SimpleUploadedFile("p.jsonl", jsonl(simple_pairs(3))),
            "name": "up",
            "kind": "preference",
        }

    assert c.post(url, form()).status_code == 403
    assert c.post(f"/datasets/{browse['dataset'].pk}/curate/", {"recipe": "{}"}).status_code == 403
    assert not Dataset.objects.filter(name="up").exists()
    token = c.get(url).cookies["csrftoken"].value
    response = c.post(url, {**form(), "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Dataset.objects.get(name="up").row_count == 3
    curate = c.post(
        f"/datasets/{browse['dataset'].pk}/curate/", {"recipe": "{", "csrfmiddlewaretoken": token}
    )
    assert curate.status_code == 400  # past CSRF; the JSON is what is wrong


# --- datasets list and upload ---------------------------------------------------------------------------


def test_upload_through_the_page_creates_a_dataset_and_lists_its_versions(client_alice, project):
    url = f"/projects/{project.pk}/datasets/"
    html = page(client_alice, url)
    assert 'enctype="multipart/form-data"' in html and 'name="csrfmiddlewaretoken"' in html
    assert 'data-testid="no-datasets"' in html
    resp = client_alice.post(
        url,
        {"file": SimpleUploadedFile("prefs.jsonl", jsonl(simple_pairs(4))), "name": "", "kind": "preference"},
    )
    ds = Dataset.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/datasets/{ds.pk}/"
    assert ds.name == "prefs" and ds.row_count == 4 and ds.status == "ready"  # named after the file
    detail = page(client_alice, resp["Location"])
    assert "Imported prefs v1: 4 rows." in detail
    # a second file under the same name is its next version; the list groups them
    client_alice.post(
        url,
        {
            "file": SimpleUploadedFile("more.jsonl", jsonl(simple_pairs(6))),
            "name": "prefs",
            "kind": "preference",
        },
    )
    client_alice.post(
        url,
        {
            "file": SimpleUploadedFile("x.jsonl", jsonl(simple_pairs(2, "s"))),
            "name": "other",
            "kind": "preference",
        },
    )
    html = page(client_alice, url)
    groups = re.findall(r'data-testid="dataset-group" data-name="([^"]+)"', html)
    assert sorted(groups) == ["other", "prefs"]
    prefs = html.split('data-name="prefs"')[1].split("</tbody>")[0]
    assert re.findall(r">v(\d+)</a>", prefs) == ["2", "1"]
    assert "status-ready" in prefs and ">6</td>" in prefs and ">4</td>" in prefs
    assert "3 dataset versions in 2 datasets" in html


def test_a_bad_file_shows_its_line_errors_and_creates_nothing(client_alice, project):
    rows = simple_pairs(2) + [{"prompt": "p", "chosen": "same", "rejected": "same"}] + simple_pairs(2)
    resp = client_alice.post(
        f"/projects/{project.pk}/datasets/",
        {"file": SimpleUploadedFile("bad.jsonl", jsonl(rows)), "name": "bad", "kind": "preference"},
    )
    assert resp.status_code == 200
    html = resp.content.decode()
    errors = re.findall(r'<li data-testid="upload-error">(.*?)</li>', html)
    assert errors == ["line 3: chosen identical to rejected"]
    assert "nothing was imported" in html
    assert 'value="bad"' in html  # the form keeps what was typed
    assert not Dataset.objects.exists() and not PreferencePair.objects.exists()
    # an unknown format and a missing file are reported too
    resp = client_alice.post(
        f"/projects/{project.pk}/datasets/",
        {"file": SimpleUploadedFile("data.txt", b"x"), "name": "t", "kind": "preference"},
    )
    assert re.search(r'data-testid="upload-error">file: ', resp.content.decode())
    resp = client_alice.post(f"/projects/{project.pk}/datasets/", {"name": "t", "kind": "preference"})
    assert resp.status_code == 200 and "This field is required." in resp.content.decode()
    assert not Dataset.objects.exists()


def test_a_large_upload_redirects_to_a_page_that_follows_its_progress(
    client_alice, project, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(dataset_services, "SYNC_IMPORT_BYTES", 10)
    from workers.celery import app

    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: sent.append((args, kwargs)))
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_alice.post(
            f"/projects/{project.pk}/datasets/",
            {
                "file": SimpleUploadedFile("big.jsonl", jsonl(simple_pairs(50))),
                "name": "big",
                "kind": "preference",
            },
        )
    ds = Dataset.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/datasets/{ds.pk}/"
    assert sent and sent[0][0][0] == "workers.tasks.import_dataset"
    Dataset.objects.filter(pk=ds.pk).update(progress=0.42, row_count=21)
    html = page(client_alice, resp["Location"])
    assert "Importing big v1 in the background." in html
    progress = html.split('data-testid="import-progress"')[1].split("</section>")[0]
    assert (
        "hidden" not in progress.split(">")[0] and "width: 42.0%" in progress and "21 rows so far" in progress
    )
    data = json.loads(
        re.search(r'<script id="dataset-data" type="application/json">(.*?)</script>', html).group(1)
    )
    assert data["status"] == "importing" and data["dataset_api"] == f"/api/datasets/{ds.pk}/"
    listing = page(client_alice, f"/projects/{project.pk}/datasets/")
    assert "status-importing" in listing and f'"importing": [{ds.pk}]' in listing


def test_a_failed_import_shows_its_error_and_row_errors(client_alice, project, alice):
    ds = make_dataset(
        project, alice, status=Dataset.Status.FAILED,
        error="rejected, nothing was imported: line 7: chosen identical to rejected",
        meta={"format": "jsonl", "filename": "big.jsonl", "row_errors": [
            {"line": 7, "error": "chosen identical to rejected"}, {"line": 9, "error": "missing field 'rejected'"},
        ]},
    )  # fmt: skip
    html = page(client_alice, f"/datasets/{ds.pk}/")
    section = html.split('data-testid="error-section"')[1].split("</section>")[0]
    assert "hidden" not in section.split(">")[0]
    assert "line 7: chosen identical to rejected" in section
    assert re.search(r"line 9</td><td>missing field &#x27;rejected&#x27;</td>", section)
    assert 'data-testid="browse-pairs"' not in html


def test_the_runs_page_links_to_the_datasets(client_alice, project):
    html = page(client_alice, f"/projects/{project.pk}/")
    assert f'href="/projects/{project.pk}/datasets/" data-testid="nav-datasets"' in html
    assert 'data-testid="nav-datasets"' not in page(client_alice, "/")


# --- one dataset ---------------------------------------------------------------------------------------


def test_dataset_page_shows_facts_outcomes_and_the_curation_summary(client_alice, project, alice, browse):
    parent = browse["dataset"]
    stats = {"rows": 6, "in": 5, "kept": 3, "dropped": 3, "seconds": 0.25,
             "kept_by_source": {"helpsteer2": 2, "magpie": 1}, "steps": [
        {"step": "exact_dedup", "params": {"key": "prompt"}, "in": 6, "dropped": 1,
         "by_source": {"helpsteer2": {"in": 3, "dropped": 1}, "magpie": {"in": 3, "dropped": 0}}},
        {"step": "length", "params": {"max_chosen": 40}, "in": 5, "dropped": 2,
         "by_source": {"helpsteer2": {"in": 2, "dropped": 0}, "magpie": {"in": 3, "dropped": 2}}},
    ]}  # fmt: skip
    curated = make_dataset(
        project, alice, version=2, parent=parent, row_count=6,
        meta={"curation_stats": stats, "recipe": {"name": "r", "steps": [{"step": "exact_dedup"}]}},
    )  # fmt: skip
    html = page(client_alice, f"/datasets/{parent.pk}/")
    assert "ab" * 32 in html and "jsonl" in html and "prefs.jsonl" in html and "2.0\xa0KB" in html
    assert f'href="/datasets/{parent.pk}/pairs/" data-testid="browse-pairs"' in html
    assert re.search(r'data-testid="kept-count">5<', html)
    assert "dropped: near_dedup" in html and "?kept=false&amp;drop_reason=near_dedup" in html
    assert "?source=magpie" in html
    assert f'href="/datasets/{curated.pk}/">prefs v2</a>' in html  # derived versions
    assert 'data-testid="curation-summary"' not in html and "plotly" not in html

    html = page(client_alice, f"/datasets/{curated.pk}/")
    assert f'href="/datasets/{parent.pk}/" data-testid="parent-link">prefs v1<' in html
    assert '<script src="/static/vendor/plotly.min.js">' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    table = html.split('data-testid="curation-table"')[1].split("</table>")[0]
    steps = re.findall(r'<tr data-testid="curation-step">(.*?)</tr>', table, re.S)
    assert len(steps) == 2
    assert "exact_dedup" in steps[0] and "16.7%" in steps[0] and "1 / 3" in steps[0] and "0 / 3" in steps[0]
    assert "length" in steps[1] and "40.0%" in steps[1] and "2 / 3" in steps[1]
    totals = html.split('data-testid="curation-totals"')[1].split("</p>")[0]
    assert "<strong>3</strong> kept" in totals and "helpsteer2 2 · magpie 1" in totals
    data = json.loads(
        re.search(r'<script id="dataset-data" type="application/json">(.*?)</script>', html).group(1)
    )
    assert data["chart"]["steps"] == ["1. exact_dedup", "2. length"]
    assert {s["name"]: s["dropped"] for s in data["chart"]["sources"]} == {
        "helpsteer2": [1, 0],
        "magpie": [0, 2],
    }


def test_problem_dataset_lists_its_problems_a_page_at_a_time(client_alice, project, alice):
    ds = make_dataset(project, alice, name="probs", kind="problems", row_count=60)
    Problem.objects.bulk_create(
        [
            Problem(dataset=ds, row=i, domain="math", prompt=f"What is {i} squared? <b>", answer=str(i * i))
            for i in range(55)
        ]
        + [
            Problem(
                dataset=ds, row=55, domain="code", prompt="write f", tests=[{"call": "f(1)", "expected": 1}]
            )
        ]
    )
    html = page(client_alice, f"/datasets/{ds.pk}/")
    assert len(re.findall(r'data-testid="problem-row"', html)) == 50
    assert "What is 0 squared? &lt;b&gt;" in html and "page 1 of 2" in html
    html = page(client_alice, f"/datasets/{ds.pk}/?page=2")
    assert len(re.findall(r'data-testid="problem-row"', html)) == 6 and "1 test<" in html
    assert 'data-testid="browse-pairs"' not in html


# --- the pair browser ----------------------------------------------------------------------------------


def test_pair_browser_lists_searches_and_filters(client_alice, browse):
    ds = browse["dataset"]
    base = f"/datasets/{ds.pk}/pairs/"
    html = page(client_alice, base)
    assert rows_of(html) == [0, 1, 2, 3, 4, 5] and "6 pairs" in html
    assert "Explain photosynthesis to a child" in html and "near_dedup" in html
    # full text (stemmed: "photosynthesis" matches both, "sunlight" only the chosen text of row 0)
    assert rows_of(page(client_alice, base + "?q=photosynthesis")) == [0, 5]
    assert rows_of(page(client_alice, base + "?q=sunlight")) == [0]
    assert rows_of(page(client_alice, base + "?q=zebra")) == []
    assert rows_of(page(client_alice, base + "?source=magpie")) == [2, 3, 4]
    assert rows_of(page(client_alice, base + "?q=photosynthesis&source=magpie")) == []
    assert rows_of(page(client_alice, base + "?kept=false")) == [3]
    assert rows_of(page(client_alice, base + "?kept=true&source=magpie")) == [2, 4]
    assert rows_of(page(client_alice, base + "?drop_reason=near_dedup")) == [3]
    assert rows_of(page(client_alice, base + "?min_len=30")) == [0, 2, 3, 4, 5]
    assert rows_of(page(client_alice, base + "?min_len=30&max_len=38")) == [0, 4, 5]
    # the filters show the state they came from
    html = page(client_alice, base + "?q=photosynthesis&source=magpie&kept=true")
    assert 'value="photosynthesis"' in html and '<option value="magpie" selected>' in html
    assert '<option value="true" selected>kept</option>' in html and "No pair matches" in html
    # garbage in the query string is ignored, never an error
    assert rows_of(page(client_alice, base + "?min_len=abc&ordering=bogus&rm=999&kept=maybe&page=9")) == [
        0, 1, 2, 3, 4, 5,
    ]  # fmt: skip


def test_pair_browser_sorts_by_length_and_paginates(client_alice, browse):
    base = f"/datasets/{browse['dataset'].pk}/pairs/"
    lengths = {p.row: p.chosen_len for p in browse["pairs"]}
    got = rows_of(page(client_alice, base + "?ordering=-chosen_len"))
    assert [lengths[r] for r in got] == sorted(lengths.values(), reverse=True)
    assert rows_of(page(client_alice, base + "?ordering=-row")) == [5, 4, 3, 2, 1, 0]
    html = page(client_alice, base + "?page_size=25&source=helpsteer2&ordering=-row")
    assert rows_of(html) == [5, 1, 0]
    # pair links carry the list's state; the sort headers keep the filters
    assert (
        f'href="/datasets/{browse["dataset"].pk}/pairs/5/?source=helpsteer2&amp;ordering=-row&amp;page_size=25"'
        in html
    )
    assert (
        'href="?source=helpsteer2&amp;page_size=25" class="sort active" data-testid="sort-row">Row ▼' in html
    )
    assert (
        'data-testid="sort-chosen_len"' in html
        and 'href="?source=helpsteer2&amp;ordering=-chosen_len' in html
    )


def test_reward_model_margins_and_sorting_by_margin(client_alice, browse):
    ds, ckpt = browse["dataset"], browse["ckpt"]
    base = f"/datasets/{ds.pk}/pairs/"
    html = page(client_alice, base)
    select = html.split('data-testid="rm-select"')[1].split("</select>")[0]
    assert f'value="{ckpt.pk}"' in select and "rm-run · step 300" in select
    assert f'value="{browse["unused"].pk}"' not in select  # it scored nothing in this dataset
    assert 'data-testid="margin"' not in html and 'data-testid="sort-margin"' not in html
    # ?ordering=margin without a reward model falls back to rows
    assert rows_of(page(client_alice, base + "?ordering=margin")) == [0, 1, 2, 3, 4, 5]

    html = page(client_alice, base + f"?rm={ckpt.pk}")
    margins = re.findall(r'data-testid="margin">(.*?)</td>', html)
    assert margins[:4] == ["0.500", "-1.250", "2.000", "0.100"] and "—" in margins[4]
    assert 'data-testid="sort-margin"' in html
    # ascending and descending margin; unscored pairs last either way, by row
    assert rows_of(page(client_alice, base + f"?rm={ckpt.pk}&ordering=margin")) == [1, 3, 0, 2, 4, 5]
    assert rows_of(page(client_alice, base + f"?rm={ckpt.pk}&ordering=-margin")) == [2, 0, 3, 1, 4, 5]
    assert rows_of(page(client_alice, base + f"?rm={ckpt.pk}&ordering=margin&source=magpie")) == [3, 2, 4]
    assert rows_of(page(client_alice, base + f"?rm={ckpt.pk}&ordering=-margin&q=photosynthesis")) == [0, 5]


def test_reward_models_of_projects_the_user_cannot_see_are_not_offered(client_alice, browse, bob):
    other = project_create(user=bob, name="bob-lab")
    run = run_services.run_create(user=bob, project=other, name="secret-rm", kind="external", config={})
    ckpt = Checkpoint.objects.create(run=run, step=1, path="/tmp/x")
    pair = browse["pairs"][0]
    PairScore.objects.create(pair=pair, checkpoint=ckpt, chosen=1, rejected=0, margin=1)
    ds = browse["dataset"]
    assert "secret-rm" not in page(client_alice, f"/datasets/{ds.pk}/pairs/")
    assert rows_of(page(client_alice, f"/datasets/{ds.pk}/pairs/?rm={ckpt.pk}&ordering=margin")) == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    html = page(client_alice, f"/datasets/{ds.pk}/pairs/0/")
    assert "secret-rm" not in html and f"checkpoint {ckpt.pk}" in html


# --- one pair ------------------------------------------------------------------------------------------


def test_pair_view_renders_both_sides_with_the_difference_marked(client_alice, browse):
    ds, ckpt = browse["dataset"], browse["ckpt"]
    html = page(client_alice, f"/datasets/{ds.pk}/pairs/1/")
    chosen = html.split('data-testid="chosen"')[1].split("</section>")[0]
    rejected = html.split('data-testid="rejected"')[1].split("</section>")[0]
    assert '<p>The capital is <ins class="diff">Paris</ins>.</p>' in chosen
    assert '<p>The capital is <del class="diff">Lyon</del>.</p>' in rejected
    assert "What is the capital of France?" in html.split('data-testid="pair-prompt"')[1]
    assert 'data-testid="diff-summary"' in html
    scores = re.findall(r'<tr data-testid="score-row"[^>]*>(.*?)</tr>', html, re.S)
    assert len(scores) == 1
    assert (
        "rm-run" in scores[0] and ">300<" in scores[0] and "-1.2500" in scores[0] and "-0.2500" in scores[0]
    )
    assert f'href="/runs/{browse["run"].pk}/"' in scores[0]
    dropped = page(client_alice, f"/datasets/{ds.pk}/pairs/3/")
    assert 'data-testid="pair-drop-reason">near_dedup<' in dropped
    assert ckpt.pk  # keeps the fixture's reward model alive for the margin column


def test_pair_view_escapes_html_and_renders_markdown(client_alice, project, alice):
    ds = make_dataset(project, alice, name="xss")
    chosen = (
        "Here is **bold** and `x < y`.\n\n<script>alert('chosen')</script>\n\n```python\n"
        "def f():\n    return '<b>'\n```\nDone."
    )
    add_pair(
        ds, 0, "<img src=x onerror=alert(1)> prompt", chosen, "<script>alert('rejected')</script> nope",
        metadata={"note": "<i>meta</i>"},
    )  # fmt: skip
    html = page(client_alice, f"/datasets/{ds.pk}/pairs/0/")
    assert "<script>alert" not in html and "<img src=x" not in html and "<i>meta</i>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt; prompt" in html
    chosen_html = strip_marks(html.split('data-testid="chosen"')[1].split("</section>")[0])
    assert "<strong>bold</strong>" in chosen_html and "<code>x &lt; y</code>" in chosen_html
    assert "<p>&lt;script&gt;alert(&#x27;chosen&#x27;)&lt;/script&gt;</p>" in chosen_html
    assert re.search(
        r'<pre><code class="language-python">.*def f\(\):\n    return .*&lt;b&gt;.*</code></pre>',
        chosen_html,
        re.S,
    )
    rejected_html = html.split('data-testid="rejected"')[1].split("</section>")[0]
    assert "&lt;script&gt;" in rejected_html and "&lt;/script&gt;" in rejected_html
    assert "&lt;i&gt;meta&lt;/i&gt;" in html


def test_pair_view_shows_a_conversation_once_and_the_two_final_turns(client_alice, project, alice):
    ds = make_dataset(project, alice, name="chat")
    context = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    add_pair(
        ds, 0, "Be brief.\n\nCapital of France?\n\nAnd of Italy?",
        context + [{"role": "assistant", "content": "Rome is the capital of Italy."}],
        context + [{"role": "assistant", "content": "Milan is the capital of Italy."}],
    )  # fmt: skip
    html = page(client_alice, f"/datasets/{ds.pk}/pairs/0/")
    roles = re.findall(r'data-testid="turn-role">(\w+)<', html)
    assert roles == ["system", "user", "assistant", "user"]
    assert html.count("Capital of France?") == 1  # the shared context once, no separate prompt
    assert 'data-testid="pair-prompt"' not in html
    chosen = html.split('data-testid="chosen"')[1].split("</section>")[0]
    rejected = html.split('data-testid="rejected"')[1].split("</section>")[0]
    assert '<ins class="diff">Rome</ins> is the capital of Italy.' in chosen and "assistant" in chosen
    assert '<del class="diff">Milan</del> is the capital of Italy.' in rejected


def test_pair_view_moves_within_the_lists_filters_and_ordering(client_alice, browse):
    ds, ckpt = browse["dataset"], browse["ckpt"]
    url = lambda row, q="": f"/datasets/{ds.pk}/pairs/{row}/{q}"  # noqa: E731

    def nav(row, q=""):
        html = page(client_alice, url(row, q))
        prev = re.search(r'href="([^"]*)" rel="prev"', html)
        nxt = re.search(r'href="([^"]*)" rel="next"', html)
        back = re.search(r'href="([^"]*)" id="back-to-list"', html).group(1)
        position = re.search(r'data-testid="pair-position">(.*?)</span>', html).group(1)
        return (unescape(prev.group(1)) if prev else None, unescape(nxt.group(1)) if nxt else None,
                unescape(back), position)  # fmt: skip

    prev, nxt, back, position = nav(0)
    assert (
        prev is None and nxt == url(1) and back == f"/datasets/{ds.pk}/pairs/#row-0" and position == "1 of 6"
    )
    # within a source filter
    q = "?source=magpie"
    assert nav(3, q)[:2] == (url(2, q), url(4, q))
    # by margin ascending: 1 (-1.25), 3 (0.1), 0 (0.5), 2 (2.0), then the unscored 4, 5
    q = f"?rm={ckpt.pk}&ordering=margin&page_size=25"
    assert nav(1, q)[:2] == (None, url(3, q))
    assert nav(0, q)[:2] == (url(3, q), url(2, q))
    prev, nxt, back, position = nav(2, q)
    assert (prev, nxt, position) == (url(0, q), url(4, q), "4 of 6")
    assert back == f"/datasets/{ds.pk}/pairs/?rm={ckpt.pk}&ordering=margin&page_size=25#row-2"
    assert nav(4, q)[:2] == (url(2, q), url(5, q))
    assert nav(5, q)[:2] == (url(4, q), None)
    # descending
    q = f"?rm={ckpt.pk}&ordering=-margin"
    assert nav(0, q)[:2] == (url(2, q), url(3, q))
    assert nav(1, q)[:2] == (url(3, q), url(4, q))
    # within a search (the same full-text match as the list)
    q = "?q=photosynthesis"
    assert nav(0, q)[:2] == (None, url(5, q)) and nav(5, q)[:2] == (url(0, q), None)
    assert nav(5, q)[3] == "2 of 2 matching"
    # the back link finds the page holding the pair
    q = "?ordering=-row&page_size=25"
    assert nav(0, q)[2].endswith("#row-0")
    # a pair outside the filters says so and still links onward
    prev, nxt, back, position = nav(1, "?source=magpie")
    assert "not in the current list" in position and nxt == url(2, "?source=magpie")


def test_markdown_and_diff_helpers():
    html = render_markdown("a <b> & **c**\nnext line\n\n# Title\n\n```\n**not bold** <x>\n```\n`**lit**`")
    assert html == (
        "<p>a &lt;b&gt; &amp; <strong>c</strong>\nnext line</p>"
        '<p class="md-heading">Title</p>'
        "<pre><code>**not bold** &lt;x&gt;</code></pre>"
        "<p><code>**lit**</code></p>"
    )
    # an unclosed fence runs to the end
    assert render_markdown("x\n```\ncode") == "<p>x</p><pre><code>code</code></pre>"
    # marks never straddle tags: each piece is wrapped on its own
    a, b, summary = word_diff("say **very loud** now", "say **quite soft** now")
    assert render_markdown(a) == '<p>say <strong><ins class="diff">very loud</ins></strong> now</p>'
    assert render_markdown(b) == '<p>say <strong><del class="diff">quite soft</del></strong> now</p>'
    assert summary["chosen_only"] == 2 and summary["rejected_only"] == 2
    a, b, _ = word_diff("one two\nthree", "one zwei\nthree")
    assert render_markdown(a) == '<p>one <ins class="diff">two</ins>\nthree</p>'
    # the private-use characters that carry the marks cannot be smuggled in
    from webapp.ui.text_render import clean_text

    assert "<ins" not in render_markdown(clean_text("\ue000x\ue001"))
    assert word_diff("x " * 30000, "y " * 30000)[2] is None  # too long: no diff, still rendered


# --- curation ------------------------------------------------------------------------------------------


def test_curate_page_offers_example_recipes_and_reports_bad_ones(client_alice, browse):
    ds = browse["dataset"]
    html = page(client_alice, f"/datasets/{ds.pk}/curate/")
    assert 'name="csrfmiddlewaretoken"' in html and 'data-testid="recipe-json"' in html
    assert f'<td class="num mono">{browse["ckpt"].pk}</td><td>rm-run</td>' in html  # ids for the recipe
    data = json.loads(
        re.search(r'<script id="curate-data" type="application/json">(.*?)</script>', html).group(1)
    )
    if data["examples"]:  # the recipes module is installed
        first = data["examples"][0]
        textarea = re.search(r'data-testid="recipe-json">(.*?)</textarea>', html, re.S).group(1)
        assert json.loads(unescape(textarea)) == first["recipe"]
        assert 'data-testid="step-doc"' in html
    bad = client_alice.post(f"/datasets/{ds.pk}/curate/", {"recipe": "{not json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.content.decode()
    assert "{not json" in bad.content.decode()  # what was typed stays
    if data["examples"]:
        bad = client_alice.post(
            f"/datasets/{ds.pk}/curate/",
            {"recipe": json.dumps({"name": "x", "steps": [{"step": "near_dedup", "threshold": 7}]})},
        )
        errors = re.findall(r'data-testid="curate-error">(.*?)</li>', bad.content.decode())
        assert bad.status_code == 400 and any(e.startswith("steps[0].threshold: ") for e in errors), errors
    assert Dataset.objects.count() == 1


def test_curating_through_the_page_makes_a_new_version_that_shows_its_steps(
    client_alice, browse, monkeypatch, django_capture_on_commit_callbacks
):
    from webapp.datasets.curation import service
    from workers.celery import app

    sent = []
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: sent.append((args, kwargs)))
    ds = browse["dataset"]
    recipe = {"name": "trim", "steps": [{"step": "exact_dedup"}, {"step": "length", "max_chosen": 40}]}
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_alice.post(f"/datasets/{ds.pk}/curate/", {"recipe": json.dumps(recipe)})
    new = Dataset.objects.exclude(pk=ds.pk).get()
    assert resp.status_code == 302 and resp["Location"] == f"/datasets/{new.pk}/"
    assert new.parent_id == ds.pk and new.version == 2 and new.status == "importing"
    assert sent and sent[0][0] == ("workers.tasks.curate_dataset",)
    html = page(client_alice, resp["Location"])
    assert "Curating prefs v1 into prefs v2." in html and "Curating</h2>" in html
    assert 'data-testid="curation-summary"' not in html  # no stats until the worker is done

    service.curation_run(new)  # what the worker does
    html = page(client_alice, resp["Location"])
    steps = re.findall(r'<tr data-testid="curation-step">(.*?)</tr>', html, re.S)
    assert len(steps) == 2 and "exact_dedup" in steps[0] and "length" in steps[1]
    assert "1 / 2" in steps[1]  # of the two magpie pairs still kept, one is longer than 40 characters
    data = json.loads(
        re.search(r'<script id="dataset-data" type="application/json">(.*?)</script>', html).group(1)
    )
    assert data["chart"]["steps"] == ["1. exact_dedup", "2. length"]
    assert {s["name"]: s["dropped"] for s in data["chart"]["sources"]} == {
        "helpsteer2": [0, 0],
        "magpie": [0, 1],
    }
    # the pair browser of the new version: row 3 keeps the source's drop, row 2 has the new one
    dropped = page(client_alice, f"/datasets/{new.pk}/pairs/?kept=false")
    assert rows_of(dropped) == [2, 3]
    reasons = sorted(set(re.findall(r'data-testid="drop-reason">(.*?)<', dropped)))
    assert len(reasons) == 2 and "near_dedup" in reasons


def test_curation_errors_name_the_recipe_field(client_alice, browse, bob):
    ds = browse["dataset"]
    other = project_create(user=bob, name="bob-lab")
    run = run_services.run_create(user=bob, project=other, name="b", kind="external", config={})
    foreign = Checkpoint.objects.create(run=run, step=1, path="/tmp/b")
    recipe = {"name": "m", "steps": [{"step": "margin_filter", "checkpoint": foreign.pk, "threshold": 0}]}
    resp = client_alice.post(f"/datasets/{ds.pk}/curate/", {"recipe": json.dumps(recipe)})
    errors = re.findall(r'data-testid="curate-error">(.*?)</li>', resp.content.decode())
    assert resp.status_code == 400 and errors == ["steps[0].checkpoint: no such checkpoint among yours"]
    resp = client_alice.post(f"/datasets/{ds.pk}/curate/", {"recipe": "[1, 2]"})
    assert resp.status_code == 400 and "must be a JSON object" in resp.content.decode()
    Dataset.objects.filter(pk=ds.pk).update(status=Dataset.Status.IMPORTING)
    resp = client_alice.post(
        f"/datasets/{ds.pk}/curate/",
        {"recipe": json.dumps({"name": "x", "steps": [{"step": "exact_dedup"}]})},
    )
    assert resp.status_code == 400 and "dataset: the dataset is not ready" in resp.content.decode()
    assert Dataset.objects.count() == 1
