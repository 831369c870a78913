"""End to end in headless Chromium: log in, upload a JSONL of preference pairs through the form (and
a bad one, which shows its line errors), browse the pairs (full-text search, source filter, keyboard
selection), open a pair with Enter, see chosen and rejected side by side with their difference
highlighted, move between pairs and back to the list with the keyboard, and look at a curated
version's chart, an import in progress and the curation form. Screenshots: /tmp/orlab-ds-*.png."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import wait_for
from webapp.datasets.models import Dataset, PairScore, PreferencePair, Problem
from webapp.runs import services as run_services
from webapp.runs.models import Checkpoint

SHOTS = "/tmp/orlab-ds-{}.png"

CONTEXT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the boiling point of water?"},
    {"role": "assistant", "content": "100 °C at sea level."},
    {"role": "user", "content": "And on Mount Everest?"},
]
PAIRS = [
    {"prompt": "Explain photosynthesis to a child.",
     "chosen": "Plants catch **sunlight** with their leaves and turn it into food.\n\nThey also breathe out the "
               "oxygen we need.",
     "rejected": "Plants eat sunlight and dirt.\n\nThey breathe out smoke.", "source": "helpsteer2"},
    {"prompt": "Describe photosynthesis in detail.",
     "chosen": "Light reactions split water and make ATP; the Calvin cycle then fixes `CO2` into sugar.",
     "rejected": "Light reactions make sugar directly from air.", "source": "magpie"},
    {"prompt": "Write a Python function that adds two numbers.",
     "chosen": "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\nCall `add(2, 3)` to get 5.",
     "rejected": "Here it is:\n\n```python\ndef add(a, b):\n    return a - b\n```\nCall `add(2, 3)` to get -1.",
     "source": "magpie"},
    {"chosen": CONTEXT + [{"role": "assistant", "content": "About 70 °C, because the air pressure is lower."}],
     "rejected": CONTEXT + [{"role": "assistant", "content": "About 150 °C, because it is colder up there."}],
     "source": "helpsteer2"},
    {"prompt": "Is <script>alert(1)</script> dangerous?",
     "chosen": "It is an inline script: escape user text before rendering it as HTML.",
     "rejected": "No, <b>never</b>.", "source": "wildguard"},
    {"prompt": "Name a prime number.", "chosen": "Seven is prime.", "rejected": "Nine is prime.",
     "source": "helpsteer2"},
]  # fmt: skip


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def shown_datasets(project, alice):
    """Made before the browser starts (no ORM calls while Playwright runs): a curated version with
    its per-step stats, and an import still in progress."""
    base = Dataset.objects.create(
        project=project, created_by=alice, name="skywork-mix", kind="preference", status="ready",
        row_count=12000, sha256="cd" * 32, meta={"format": "parquet", "filename": "mix.parquet"},
    )  # fmt: skip
    steps = [
        ("exact_dedup", {"key": "prompt+chosen"}, {"helpsteer2": (5000, 120), "magpie": (6000, 800), "wildguard": (1000, 30)}),
        ("near_dedup", {"threshold": 0.8}, {"helpsteer2": (4880, 300), "magpie": (5200, 950), "wildguard": (970, 10)}),
        ("length", {"max_chosen": 16000}, {"helpsteer2": (4580, 40), "magpie": (4250, 90), "wildguard": (960, 0)}),
        ("consistency", {"checkpoint": 1}, {"wildguard": (960, 420)}),
    ]  # fmt: skip
    stats = {"rows": 12000, "in": 12000, "kept": 8240, "dropped": 3760, "seconds": 4.2,
             "kept_by_source": {"helpsteer2": 4540, "magpie": 4160, "wildguard": 540}, "steps": [
                 {"step": name, "params": params, "in": sum(v[0] for v in by.values()),
                  "dropped": sum(v[1] for v in by.values()),
                  "by_source": {s: {"in": i, "dropped": d} for s, (i, d) in by.items()}}
                 for name, params, by in steps]}  # fmt: skip
    curated = Dataset.objects.create(
        project=project, created_by=alice, name="skywork-mix", kind="preference", status="ready", version=2,
        parent=base, row_count=12000, meta={"recipe": {"name": "skywork-style", "steps": []}, "curation_stats": stats},
    )  # fmt: skip
    importing = Dataset.objects.create(
        project=project, created_by=alice, name="big-import", kind="preference", status="importing",
        progress=0.37, row_count=185000, meta={"format": "jsonl", "filename": "big.jsonl", "bytes": 400_000_000},
    )  # fmt: skip
    scored = Dataset.objects.create(
        project=project, created_by=alice, name="scored-prefs", kind="preference", status="ready", row_count=8,
        meta={"format": "jsonl", "filename": "scored.jsonl"},
    )  # fmt: skip
    run = run_services.run_create(user=alice, project=project, name="rm-llama-8b", kind="external", config={})
    ckpt = Checkpoint.objects.create(run=run, step=2000, path="/tmp/rm-2000")
    late = Checkpoint.objects.create(run=run, step=4000, path="/tmp/rm-4000")
    for i in range(8):
        pair = PreferencePair.objects.create(
            dataset=scored, row=i, prompt=f"Question {i}: how many legs does a spider have?",
            chosen=f"A spider has eight legs (answer {i}).", rejected=f"A spider has six legs (answer {i}).",
            chosen_text=f"A spider has eight legs (answer {i}).", rejected_text=f"A spider has six legs (answer {i}).",
            chosen_len=36, rejected_len=34, source="helpsteer2" if i % 2 else "magpie",
            kept=i != 5, drop_reason="margin_filter: margin -2.10 < 0.5" if i == 5 else "",
            metadata={"category": "biology", "score": 0.1 * i},
        )  # fmt: skip
        margin = [1.5, -0.5, 0.25, 3.0, 0.75, -2.1, 1.0, 0.0][i]
        PairScore.objects.create(pair=pair, checkpoint=ckpt, chosen=margin + 0.5, rejected=0.5, margin=margin)
        if i < 4:
            PairScore.objects.create(
                pair=pair, checkpoint=late, chosen=margin + 1, rejected=1, margin=margin * 0.5
            )
    problems = Dataset.objects.create(
        project=project, created_by=alice, name="math-code", kind="problems", status="ready", row_count=60,
        meta={"format": "jsonl", "filename": "problems.jsonl"},
    )  # fmt: skip
    Problem.objects.bulk_create(
        [Problem(dataset=problems, row=i, domain="math", prompt=f"Compute {i} * {i} and simplify.", answer=str(i * i))
         for i in range(55)]
        + [Problem(dataset=problems, row=55 + i, domain="code", prompt=f"Write f(x) returning x + {i}.",
                   tests=[{"call": "f(1)", "expected": 1 + i}, {"call": "f(2)", "expected": 2 + i}]) for i in range(5)]
    )  # fmt: skip
    return {
        "curated": curated.pk, "importing": importing.pk, "scored": scored.pk, "rm": ckpt.pk, "problems": problems.pk,
    }  # fmt: skip


def row_numbers(page) -> list[int]:
    return [
        int(r)
        for r in page.eval_on_selector_all('[data-testid="pair-row"]', "els => els.map(e => e.dataset.row)")
    ]


def selected_row(page) -> int:
    return int(page.get_attribute('[data-testid="pair-row"].selected', "data-row"))


@pytest.mark.slow
def test_upload_browse_and_read_pairs(
    live_server, fast_passwords, alice, project, shown_datasets, tmp_path, browser
):
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
    page.set_default_timeout(15_000)
    url = live_server.url

    # log in on the way to the datasets page
    page.goto(f"{url}/projects/{project.pk}/datasets/")
    assert "/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/projects/{project.pk}/datasets/$"))
    assert page.is_visible('[data-testid="nav-datasets"]')

    # a bad file: its line errors, and nothing created
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n"
    )
    page.set_input_files('[data-testid="upload-file"]', str(bad))
    assert page.input_value('[data-testid="upload-name"]') == "bad"  # named after the file
    page.click('[data-testid="upload-submit"]')
    page.wait_for_selector('[data-testid="upload-errors"]')
    assert page.text_content('[data-testid="upload-error"]').strip() == "line 2: chosen identical to rejected"
    page.screenshot(path=SHOTS.format("upload-error"), full_page=True)

    # a good one: the dataset page
    good = tmp_path / "e2e-prefs.jsonl"
    good.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    page.fill('[data-testid="upload-name"]', "")
    page.set_input_files('[data-testid="upload-file"]', str(good))
    assert page.input_value('[data-testid="upload-name"]') == "e2e-prefs"
    page.click('[data-testid="upload-submit"]')
    page.wait_for_url(re.compile(r"/datasets/\d+/$"))
    ds_id = int(re.search(r"/datasets/(\d+)/$", page.url).group(1))
    assert page.text_content('[data-testid="status-badge"]').strip() == "ready"
    assert page.text_content('[data-testid="row-count"]').strip() == str(len(PAIRS))
    api = page.request.get(f"{url}/api/datasets/{ds_id}/").json()
    assert api["name"] == "e2e-prefs" and api["row_count"] == len(PAIRS)
    assert page.request.get(f"{url}/api/datasets/?project={project.pk}&name=bad").json()["count"] == 0
    page.screenshot(path=SHOTS.format("dataset"), full_page=True)

    page.goto(f"{url}/projects/{project.pk}/datasets/")
    groups = page.eval_on_selector_all('[data-testid="dataset-group"]', "els => els.map(e => e.dataset.name)")
    assert groups[0] == "e2e-prefs" and set(groups) == {
        "e2e-prefs",
        "skywork-mix",
        "big-import",
        "scored-prefs",
        "math-code",
    }
    page.screenshot(path=SHOTS.format("list"), full_page=True)

    # the pair browser: search, then a source filter, all in the URL
    page.goto(f"{url}/datasets/{ds_id}/")
    page.click('[data-testid="browse-pairs"]')
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/$"))
    assert row_numbers(page) == list(range(len(PAIRS)))
    page.screenshot(path=SHOTS.format("pairs"), full_page=True)
    page.keyboard.press("/")
    page.keyboard.type("photosynthesis")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"\?q=photosynthesis$"))
    assert row_numbers(page) == [0, 1]
    assert page.text_content('[data-testid="pair-count"]').strip() == "2 pairs match"
    page.select_option('[data-testid="filter-source"]', "magpie")  # applies at once
    page.wait_for_url(re.compile(r"q=photosynthesis&source=magpie$"))
    assert row_numbers(page) == [1]
    page.screenshot(path=SHOTS.format("pairs-filtered"), full_page=True)

    # keyboard: j/k select, Enter opens the selected pair
    page.click('[data-testid="clear-filters"]')
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/\?$|/pairs/$"))
    assert selected_row(page) == 0
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    assert selected_row(page) == 2
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/2/"))

    # chosen and rejected side by side, the difference highlighted
    chosen = page.locator('[data-testid="chosen"]').bounding_box()
    rejected = page.locator('[data-testid="rejected"]').bounding_box()
    assert chosen["x"] + chosen["width"] <= rejected["x"] + 1 and abs(chosen["y"] - rejected["y"]) < 2
    ins = page.locator('[data-testid="chosen"] ins.diff').first
    assert ins.is_visible()
    assert page.locator('[data-testid="chosen"] pre code').count() == 1  # the fenced code block
    assert page.eval_on_selector(
        '[data-testid="chosen"] ins.diff', "e => getComputedStyle(e).backgroundColor"
    ) not in (
        "rgba(0, 0, 0, 0)",
        "transparent",
    )
    assert "+" in page.text_content('[data-testid="chosen"] ins.diff')
    assert "-" in page.text_content('[data-testid="rejected"] del.diff')
    page.screenshot(path=SHOTS.format("pair-code"), full_page=True)

    # j / → next pair (the conversation), k / ← previous, Esc back to the list on that pair
    page.keyboard.press("j")
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/3/"))
    roles = page.eval_on_selector_all('[data-testid="turn-role"]', "els => els.map(e => e.textContent)")
    assert roles == ["system", "user", "assistant", "user"]
    assert "70" in page.text_content('[data-testid="chosen"] ins.diff')
    page.screenshot(path=SHOTS.format("pair-chat"), full_page=True)
    page.keyboard.press("ArrowRight")
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/4/"))
    assert "<script>alert(1)</script>" in page.text_content('[data-testid="pair-prompt"]')  # shown as text
    page.screenshot(path=SHOTS.format("pair-escaped"), full_page=True)
    page.keyboard.press("k")
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/3/"))
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(rf"/datasets/{ds_id}/pairs/(\?)?#row-3$"))
    assert selected_row(page) == 3

    # navigation within a filter and ordering (the query string travels with the pair)
    page.goto(f"{url}/datasets/{ds_id}/pairs/?source=helpsteer2&ordering=-row")
    assert row_numbers(page) == [5, 3, 0]
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/pairs/5/\?source=helpsteer2&ordering=-row$"))
    page.keyboard.press("j")
    page.wait_for_url(re.compile(r"/pairs/3/\?source=helpsteer2&ordering=-row$"))
    assert page.text_content('[data-testid="pair-position"]').strip() == "2 of 3 matching"

    # a curated version: the per-step chart; an import in progress; the curation form
    page.goto(f"{url}/datasets/{shown_datasets['curated']}/")
    page.wait_for_function("document.querySelector('#curation-chart').dataset.steps === '4'")
    assert page.locator("#curation-chart .bars path").count() >= 10
    page.screenshot(path=SHOTS.format("curated"), full_page=True)
    page.goto(f"{url}/datasets/{shown_datasets['importing']}/")
    assert page.is_visible('[data-testid="import-progress"]')
    width = page.eval_on_selector("#progress-bar", "e => e.style.width")
    assert float(width.rstrip("%")) == 37.0
    page.wait_for_timeout(1200)  # one poll: still importing, the page stays
    assert "37.0%" in page.text_content('[data-testid="progress-text"]')
    page.screenshot(path=SHOTS.format("importing"), full_page=True)
    # a reward model's margins: choose it, sort by margin, open the lowest
    scored, rm = shown_datasets["scored"], shown_datasets["rm"]
    page.goto(f"{url}/datasets/{scored}/pairs/")
    page.select_option('[data-testid="rm-select"]', str(rm))
    page.wait_for_url(re.compile(rf"\?rm={rm}$"))
    assert page.locator('[data-testid="margin"]').count() == 8
    page.click('[data-testid="sort-margin"]')
    page.wait_for_url(re.compile(rf"rm={rm}&ordering=margin$"))
    assert row_numbers(page) == [5, 1, 7, 2, 4, 6, 0, 3]
    page.screenshot(path=SHOTS.format("pairs-margin"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/pairs/5/\?rm={rm}&ordering=margin$"))
    assert page.locator('[data-testid="score-row"]').count() == 1
    assert "margin_filter" in page.text_content('[data-testid="pair-drop-reason"]')
    page.keyboard.press("j")
    page.wait_for_url(re.compile(rf"/pairs/1/\?rm={rm}&ordering=margin$"))
    assert page.locator('[data-testid="score-row"]').count() == 2
    page.screenshot(path=SHOTS.format("pair-scores"), full_page=True)

    page.goto(f"{url}/datasets/{shown_datasets['problems']}/?page=2")
    assert page.locator('[data-testid="problem-row"]').count() == 10
    assert "page 2 of 2" in page.text_content('[data-testid="pager"]')
    page.screenshot(path=SHOTS.format("problems"), full_page=True)

    page.goto(f"{url}/datasets/{ds_id}/curate/")
    page.click('[data-testid="step-doc"] >> nth=1')
    page.select_option('[data-testid="example-select"]', "dedup")
    recipe = json.loads(page.input_value('[data-testid="recipe-json"]'))
    assert recipe["name"] == "dedup" and recipe["steps"][0]["step"] == "exact_dedup"
    page.click('summary:has-text("length_ratio")')
    page.click('[data-testid="add-step"][data-step="length_ratio"]')
    recipe = json.loads(page.input_value('[data-testid="recipe-json"]'))
    assert recipe["steps"][-1] == {"step": "length_ratio", "max_ratio": 3.0} and len(recipe["steps"]) == 4
    page.screenshot(path=SHOTS.format("curate"), full_page=True)

    assert not errors, errors


def settled(page) -> str:
    """The status a freshly rendered page shows once the import is over ("" while it runs or the
    page is reloading)."""
    try:
        return page.evaluate(
            """() => { const box = document.getElementById("progress-section");
                       if (document.readyState !== "complete" || !box || !box.hidden) return "";
                       return document.querySelector('[data-testid=status-badge]').textContent.trim(); }"""
        )
    except Exception:  # the context went away with a reload
        return ""


def big_jsonl(path, n: int, bad_line: int | None = None):
    with open(path, "w") as f:
        for i in range(n):
            if bad_line is not None and i == bad_line - 1:
                f.write(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
                continue
            f.write(
                json.dumps(
                    {
                        "prompt": f"Question {i}: " + "why is the sky blue? " * 4,
                        "chosen": "Rayleigh scattering of sunlight by air molecules. " * 3 + str(i),
                        "rejected": "Because it reflects the ocean. " * 3 + str(i),
                        "source": f"s{i % 3}",
                    }
                )  # fmt: skip
                + "\n"
            )
    return path


@pytest.mark.slow
def test_a_background_import_shows_live_progress_then_the_result(
    live_server, fast_passwords, worker, alice, project, tmp_path, monkeypatch, browser
):
    from webapp.datasets import services as dataset_services

    monkeypatch.setattr(dataset_services, "SYNC_IMPORT_BYTES", 100_000)  # the server runs in this process
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
    page.set_default_timeout(15_000)
    url = live_server.url
    page.goto(f"{url}/login/?next=/projects/{project.pk}/datasets/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/projects/{project.pk}/datasets/$"))

    def upload(path) -> int:
        page.goto(f"{url}/projects/{project.pk}/datasets/")
        page.set_input_files('[data-testid="upload-file"]', str(path))
        page.click('[data-testid="upload-submit"]')
        page.wait_for_url(re.compile(r"/datasets/\d+/$"))
        return int(re.search(r"/datasets/(\d+)/$", page.url).group(1))

    # a good file: the page renders "importing" with a bar, follows it, and reloads itself when ready
    ds = upload(big_jsonl(tmp_path / "sky.jsonl", 60_000))
    assert page.text_content('[data-testid="status-badge"]').strip() == "importing"
    assert page.is_visible('[data-testid="import-progress"]')
    page.wait_for_function(
        "parseFloat(document.getElementById('progress-bar').style.width) > 0", timeout=60_000
    )  # moved without a reload
    page.wait_for_timeout(500)  # the bar's transition
    page.screenshot(path=SHOTS.format("import-progress"), full_page=True)
    # no reload by hand: the page reloads itself once the worker is done
    wait_for(lambda: settled(page) == "ready", timeout=120, message="the import to finish")
    assert page.evaluate("performance.getEntriesByType('navigation')[0].type") == "reload"
    assert page.text_content('[data-testid="row-count"]').strip() == "60000"
    assert not page.is_visible('[data-testid="import-progress"]')
    assert page.is_visible('[data-testid="browse-pairs"]')

    # a bad row near the end: the page ends on the error and the rows that caused it
    ds = upload(big_jsonl(tmp_path / "sky-bad.jsonl", 40_000, bad_line=39_990))
    page.wait_for_function(
        "document.querySelector('[data-testid=status-badge]').textContent.trim() === 'failed'",
        timeout=120_000,
    )
    page.wait_for_selector('[data-testid="row-errors"]')
    assert "line 39990" in page.text_content('[data-testid="row-errors"]')
    assert "chosen identical to rejected" in page.text_content('[data-testid="dataset-error"]')
    assert page.request.get(f"{url}/api/datasets/{ds}/").json()["status"] == "failed"
    page.screenshot(path=SHOTS.format("import-failed"), full_page=True)
    assert not errors, errors
