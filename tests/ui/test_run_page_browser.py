"""The run page's panels in headless Chromium: benchmark evaluations charted against step (protocol
on hover, live while the run runs, overlaid on the compare page), the samples browser (pages,
filters kept in a shareable URL, rows that open to the full escaped texts), and scoring a preference
dataset with a reward-model checkpoint from its row, served by a real Celery worker, down to the
scores in the pair browser. Screenshots go to /tmp/orlab-runpage-*.png.

Data is made in fixtures through the services before the browser starts; while Playwright runs the
test reads and writes through the pages and the API only (an ORM call there would open a second
database connection that outlives the test)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import wait_for
from trainers.common.verifiers.verdict import VERDICTS

PROTOCOL = {
    "k": 4,
    "temperature": 0.6,
    "top_p": 0.95,
    "max_new_tokens": 512,
    "verifier": "orlab-verifiers-1",
    "problems": 30,
}
N_SAMPLES = 60


def login(page, base_url: str, next_path: str) -> None:
    page.goto(f"{base_url}{next_path}")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(re.escape(next_path.split("?")[0])))


def new_page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(20_000)
    return page


def token_for(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


# --- evaluations ----------------------------------------------------------------------------------


@pytest.fixture
def evaluated(live_server, alice, project):
    """A running external run with evaluations on two benchmarks and one failed evaluation; a second
    (finished) run evaluated on one of the benchmarks, for the compare page."""
    from webapp.runs import services
    from webapp.runs.models import Evaluation

    run = services.run_create(user=alice, project=project, name="policy", kind="external", config={"lr": 1})
    other = services.run_create(
        user=alice, project=project, name="baseline", kind="external", config={"lr": 2}
    )
    logged = []
    for bench, base in (("aime24", 0.1), ("math500", 0.4)):
        for step in (10, 20):
            metrics = {
                "avg@4": base + step / 100,
                "pass@1": base + step / 120,
                "pass@4": base + step / 80,
                "no_answer_rate": 0.3 - step / 100,
            }
            services.evaluation_record(run.id, step, bench, metrics, PROTOCOL)
            logged.append((bench, step, metrics))
    services.evaluation_record(other.id, 10, "aime24", {"avg@4": 0.05, "pass@4": 0.1}, PROTOCOL)
    Evaluation.objects.create(
        run=run, benchmark_name="aime24", step=30, k=4, status="failed", protocol=PROTOCOL,
        error="RuntimeError: CUDA out of memory while sampling",
    )  # fmt: skip
    services.run_finish_external(other, status="succeeded")
    return {"run": run, "other": other, "logged": logged, "token": token_for(alice)}


def eval_traces(page, selector: str = "#eval-chart") -> list[dict]:
    return page.evaluate(
        """sel => (document.querySelector(sel).data || []).map(t => ({
               name: t.name, visible: t.visible, x: Array.from(t.x), y: Array.from(t.y) }))""",
        selector,
    )


def eval_points(page) -> int:
    return int(page.get_attribute("#eval-chart", "data-points") or 0)


@pytest.mark.slow
def test_evaluations_chart_with_protocol_on_hover_live_and_on_compare(live_server, evaluated, browser):
    run, logged = evaluated["run"], evaluated["logged"]
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{run.pk}/")
    expected_points = sum(len(m) for _, _, m in logged)
    wait_for(lambda: eval_points(page) == expected_points, timeout=20, message="the evaluations chart")

    # one line per benchmark x metric; accuracy shown, rates one click away in the legend
    traces = {t["name"]: t for t in eval_traces(page)}
    assert set(traces) == {f"{b} · {m}" for b, _, ms in logged for m in ms}
    for bench, step, metrics in logged:
        for metric, value in metrics.items():
            t = traces[f"{bench} · {metric}"]
            assert t["y"][t["x"].index(step)] == pytest.approx(value)
            assert t["visible"] == ("legendonly" if metric == "no_answer_rate" else True)

    # hovering a point shows the protocol that produced it
    box = page.locator("#eval-chart .scatterlayer .trace .points path").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_for(lambda: "verifier" in page.text_content("#eval-chart .hoverlayer"), timeout=5, message="hover")
    hover = page.text_content("#eval-chart .hoverlayer")
    for text in ("k=4", "T=0.6", "top_p=0.95", "max length=512", "verifier=orlab-verifiers-1", "problems=30"):
        assert text in hover, hover

    # the table lists every evaluation, the failed one with its error
    rows = page.locator('[data-testid="eval-row"]')
    assert rows.count() == len(logged) + 1
    failed = page.locator('[data-testid="eval-row"][data-status="failed"]')
    assert "CUDA out of memory" in failed.inner_text()
    assert "k=4" in rows.first.inner_text() and "max length=512" in rows.first.inner_text()
    page.screenshot(path="/tmp/orlab-runpage-evaluations.png", full_page=True)

    # live: an evaluation logged while the page is open appears without a reload
    page.evaluate("window.__no_reload = true")
    headers = {"Authorization": f"Token {evaluated['token']}", "Content-Type": "application/json"}
    new = {"step": 40, "benchmark": "aime24", "metrics": {"avg@4": 0.61, "pass@4": 0.8}, "protocol": PROTOCOL}
    resp = page.request.post(
        f"{live_server.url}/api/runs/{run.pk}/evaluations/", data=json.dumps(new), headers=headers
    )
    assert resp.status == 201, resp.text()
    wait_for(lambda: eval_points(page) == expected_points + 2, timeout=15, message="the new evaluation")
    aime_avg = {t["name"]: t for t in eval_traces(page)}["aime24 · avg@4"]
    assert (aime_avg["x"][-1], aime_avg["y"][-1]) == (40, pytest.approx(0.61))
    assert rows.count() == len(logged) + 2
    assert page.evaluate("window.__no_reload") is True

    # the compare page overlays the two runs' evaluations on the shared benchmark
    page.goto(f"{live_server.url}/compare/?runs={run.pk},{evaluated['other'].pk}")
    aime = '[data-testid="eval-chart"][data-key="aime24"]'
    wait_for(
        lambda: page.evaluate(f"(document.querySelector('{aime}').data || []).length") > 0,
        timeout=15,
        message="compare evaluations",
    )
    xs = page.evaluate(f"document.querySelector('{aime}').data.map(t => Array.from(t.x))")
    assert any(x == [10] for x in xs) and any(10 in x and 20 in x for x in xs)  # the baseline and the policy
    assert not errors, errors


# --- samples --------------------------------------------------------------------------------------


def sample(i: int) -> dict:
    """Sample i of the fixture: step i // 5, the verdicts in turn, every third one truncated; sample
    7 carries markup that must stay text."""
    prompt = f"Problem {i}: what is {i} + {i}?"
    completion = f"<think>\nadd them\n    carefully\n</think>\nThe answer is {2 * i}."
    if i == 7:
        prompt = "Show <b>bold</b> & <script>window.__xss = 1</script> as text"
        completion = "line one\n    indented two\n<img src=x onerror='window.__xss=2'>"
    return {
        "step": i // 5, "prompt": prompt, "completion": completion, "verdict": VERDICTS[i % 5],
        "reward": 1.0 if i % 5 == 0 else 0.0, "advantage": round(0.9 - i / 40, 3), "length": 10 + i,
        "truncated": i % 3 == 0, "extra": {"detail": f"checked {i}"},
    }  # fmt: skip


@pytest.fixture
def sampled(live_server, alice, project):
    from webapp.runs import services

    run = services.run_create(user=alice, project=project, name="rollouts", kind="external", config={})
    assert services.samples_record(run, [sample(i) for i in range(N_SAMPLES)]) == N_SAMPLES
    services.run_finish_external(run, status="succeeded")
    return run


def shown_samples(page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="sample-row"]')].map(tr => ({
               step: Number(tr.cells[0].textContent), verdict: tr.cells[1].textContent,
               truncated: tr.cells[5].textContent }))"""
    )


def wait_rows(page, n: int, message: str) -> None:
    wait_for(
        lambda: len(shown_samples(page)) == n and not page.is_visible("#samples-error"),
        timeout=15,
        message=message,
    )


@pytest.mark.slow
def test_samples_browser_pages_filters_in_the_url_and_opens_rows(live_server, sampled, browser):
    errors: list[str] = []
    page = new_page(browser, errors)
    base = f"/runs/{sampled.pk}/"
    login(page, live_server.url, base)
    wait_rows(page, 25, "the first page")
    assert page.inner_text('[data-testid="samples-count"]') == f"{N_SAMPLES} samples"
    assert page.inner_text('[data-testid="samples-page"]') == "page 1 of 3"
    assert [s["step"] for s in shown_samples(page)] == [i // 5 for i in range(25)]

    page.click('[data-testid="samples-next"]')
    wait_for(
        lambda: page.inner_text('[data-testid="samples-page"]') == "page 2 of 3", timeout=10, message="page 2"
    )
    assert shown_samples(page)[0]["step"] == 5 and "sample_page=2" in page.url

    # filters: wrong answers, not truncated, steps 2..9
    page.select_option('[data-testid="sample-verdict"]', "wrong")
    page.select_option('[data-testid="sample-truncated"]', "false")
    page.fill('[data-testid="sample-step-min"]', "2")
    page.fill('[data-testid="sample-step-max"]', "9")
    page.click('[data-testid="sample-filter-submit"]')
    wanted = [
        s
        for s in map(sample, range(N_SAMPLES))
        if s["verdict"] == "wrong" and not s["truncated"] and 2 <= s["step"] <= 9
    ]
    wait_rows(page, len(wanted), "the filtered samples")
    assert shown_samples(page) == [{"step": s["step"], "verdict": "wrong", "truncated": "no"} for s in wanted]
    assert page.inner_text('[data-testid="samples-count"]') == f"{len(wanted)} samples match"
    query = dict(re.findall(r"[?&]([^=&]+)=([^&#]*)", page.url))
    assert query == {"verdict": "wrong", "truncated": "false", "step_min": "2", "step_max": "9"}

    # a click opens a row's full prompt and completion, a second click closes it
    first = page.locator('[data-testid="sample-row"]').first
    first.click()
    detail = page.locator('[data-testid="sample-detail"]')
    assert detail.count() == 1
    assert page.locator('[data-testid="sample-prompt"]').text_content() == wanted[0]["prompt"]
    assert page.locator('[data-testid="sample-completion"]').text_content() == wanted[0]["completion"]
    assert (
        f"checked {(wanted[0]['step']) * 5 + 1}"
        in page.locator('[data-testid="sample-extra"]').text_content()
    )
    first.click()
    assert detail.count() == 0

    # back: the previous state (page 2, no filters) and its form
    page.go_back()
    wait_for(
        lambda: page.inner_text('[data-testid="samples-page"]') == "page 2 of 3", timeout=10, message="back"
    )
    assert page.input_value('[data-testid="sample-verdict"]') == "" and "verdict" not in page.url

    # a refused filter names the field
    page.fill('[data-testid="sample-step-min"]', "9")
    page.fill('[data-testid="sample-step-max"]', "2")
    page.click('[data-testid="sample-filter-submit"]')
    wait_for(lambda: page.is_visible("#samples-error"), timeout=10, message="the error")
    assert "step_max: must be at least step_min" in page.inner_text("#samples-error")
    assert len(errors) == 1 and "400" in errors[0], errors  # the browser logs the refused request
    errors.clear()

    # a shared link opens with its filters; Enter opens a row; markup stays text, pre-wrapped
    page.goto(f"{live_server.url}{base}?verdict=no_answer&step_min=1&step_max=1")
    wait_rows(page, 1, "the shared view")
    assert page.input_value('[data-testid="sample-verdict"]') == "no_answer"
    assert page.input_value('[data-testid="sample-step-min"]') == "1"
    page.locator('[data-testid="sample-row"]').focus()
    page.keyboard.press("Enter")
    prompt = page.locator('[data-testid="sample-prompt"]')
    assert prompt.text_content() == sample(7)["prompt"]
    assert page.locator('[data-testid="sample-completion"]').text_content() == sample(7)["completion"]
    assert "&lt;script&gt;" in prompt.inner_html()
    assert page.evaluate("window.__xss") is None
    assert prompt.evaluate("el => getComputedStyle(el).whiteSpace") == "pre-wrap"
    page.screenshot(path="/tmp/orlab-runpage-samples.png", full_page=True)
    page.keyboard.press("Enter")
    assert page.locator('[data-testid="sample-detail"]').count() == 0
    assert not errors, errors


# --- scoring a preference dataset with a reward-model checkpoint --------------------------------


@pytest.fixture
def reward_run(live_server, alice, project, api, tmp_path):
    """A tiny Bradley-Terry reward model trained in-process (as tests/workers/test_checkpoint_jobs.py
    does), recorded as the checkpoint of a reward run that is still running (its page is live); a
    24-pair preference set uploaded."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from trainers.base import MemorySink, get_spec
    from trainers.common.demo_data import generate_pairs, write_jsonl
    from webapp.runs.models import Checkpoint, Run
    from webapp.runs.retention import run_artifact_dir

    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected", "source")} for r in generate_pairs(24, seed=3)]
    upload = SimpleUploadedFile("prefs.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    resp = api.post(
        "/api/datasets/", {"file": upload, "name": "prefs", "kind": "preference", "project": project.id}
    )
    assert resp.status_code == 201, resp.content
    spec = get_spec("reward")
    train_file = write_jsonl(generate_pairs(64, seed=1), tmp_path / "train.jsonl")
    (tmp_path / "rm").mkdir()
    sink = MemorySink(workdir=tmp_path / "rm")
    spec.train_fn()(
        spec.validate({**spec.presets["tiny-cpu-demo"], "train_dataset": str(train_file), "epochs": 1}), sink
    )
    step, path = sink.checkpoints[-1][:2]
    assert Path(path).exists()
    run = Run.objects.create(project=project, name="tiny-rm", kind="reward", status="running", queue="cpu")
    # where a worker writes a checkpoint: workers load nothing else (webapp.runs.checkpoint_paths)
    stored = run_artifact_dir(run.id) / "attempt-1" / f"checkpoint-{step:08d}"
    shutil.rmtree(run_artifact_dir(run.id), ignore_errors=True)  # a run id reused by a new test database
    shutil.copytree(path, stored)
    ckpt = Checkpoint.objects.create(run=run, step=step, path=str(stored))
    return {
        "run": run,
        "ckpt": ckpt,
        "dataset": resp.json()["id"],
        "pairs": len(rows),
        "token": token_for(alice),
    }


@pytest.mark.slow
def test_score_a_dataset_from_a_checkpoint_row_and_open_its_scores(live_server, worker, reward_run, browser):
    run, ckpt, ds = reward_run["run"], reward_run["ckpt"], reward_run["dataset"]
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{run.pk}/")
    assert "No scoring job yet" in page.inner_text('[data-testid="scoring-table"]')
    assert page.locator('[data-testid="checkpoint-row"] [data-testid="score-control"]').count() == 1

    # the trainer records a newer checkpoint (as its worker's sink does): its row shows up live, with
    # its own score form
    from webapp.runs import services

    step = ckpt.step + 1
    newest = services.checkpoint_record(run.pk, 1, step, ckpt.path, {}).id
    row = page.locator(f'[data-testid="checkpoint-row"][data-step="{step}"]')
    wait_for(lambda: row.count() == 1, timeout=20, message="the new checkpoint's row")
    assert row.locator("form").get_attribute("action") == f"/runs/{run.pk}/checkpoints/{newest}/score/"

    row.locator('[data-testid="score-control"] summary').click()
    row.locator('[data-testid="score-dataset"]').select_option(str(ds))
    row.locator('[data-testid="score-submit"]').click()
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/#scoring$"))
    assert f"Scoring prefs v1 with the step-{step} checkpoint" in page.inner_text('[data-testid="messages"]')
    job = page.locator('[data-testid="scoring-row"]')
    assert job.count() == 1 and "prefs v1" in job.inner_text()

    # the worker scores every pair; the page follows the job without a reload
    page.evaluate("window.__no_reload = true")
    wait_for(
        lambda: page.get_attribute('[data-testid="scoring-row"]', "data-status") in ("succeeded", "failed"),
        timeout=120,
        message="the scoring job to finish",
    )
    assert page.get_attribute('[data-testid="scoring-row"]', "data-status") == "succeeded", job.inner_text()
    assert page.evaluate("window.__no_reload") is True
    assert str(reward_run["pairs"]) in job.locator("td").nth(5).inner_text()
    page.screenshot(path="/tmp/orlab-runpage-scoring.png", full_page=True)

    # the link opens the pair browser with this model's margins, lowest first
    page.click('[data-testid="scores-link"]')
    page.wait_for_url(re.compile(rf"/datasets/{ds}/pairs/\?rm={newest}&ordering=margin$"))
    assert re.search(rf"score of tiny-rm\s+at step {step}", page.inner_text("main"))
    margins = [float(t) for t in page.locator('[data-testid="margin"]').all_inner_texts()]
    assert len(margins) == reward_run["pairs"] and margins == sorted(margins)
    assert len(set(margins)) > 1  # real scores, not a constant
    assert not errors, errors
