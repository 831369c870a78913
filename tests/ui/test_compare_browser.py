"""The runs table and the compare page in headless Chromium: filter the table, compare three runs,
the smoothing slider changes the drawn curve, grouping over seeds draws a band, the config diff shows
the differing field, CSV and PNG exports download, the state survives a reload from the URL, and
running runs keep updating. Screenshots go to /tmp/orlab-cmp-*.png.

All data is created in fixtures before the browser starts; while Playwright runs the test reads
through the pages and the API only (an ORM call there would open a second database connection that
outlives the test)."""

from __future__ import annotations

import base64
import csv
import io
import re
import struct
import time

import numpy as np
import pytest

from tests.conftest import wait_for

STEPS = 200


@pytest.fixture
def sweep(live_server, alice, project):
    """A 2 x 2 sweep (lr x seed) of external runs plus a third lr: noisy losses, entropies (the
    lr=1e-4 run collapses early), a token counter, and a benchmark evaluation."""
    from webapp.datasets.models import Dataset
    from webapp.runs import services
    from webapp.runs.metric_store import Columns, metrics_record
    from webapp.runs.models import Evaluation, Run

    rng = np.random.default_rng(0)
    runs = []
    grid = [(1e-6, 0), (1e-6, 1), (1e-5, 0), (1e-5, 1), (1e-4, 0)]
    for i, (lr, seed) in enumerate(grid):
        run = services.run_create(
            user=alice, project=project, name=f"grpo-{i}", kind="external",
            config={"lr": lr, "seed": seed, "entropy": {"target": 0.2}, "model": "qwen-1.5b"}, group="sweep",
        )  # fmt: skip
        steps = np.arange(STEPS)
        speed = {1e-6: 0.5, 1e-5: 1.0, 1e-4: 2.0}[lr]
        loss = np.exp(-speed * steps / STEPS * 3) + 0.08 * rng.standard_normal(STEPS) + 0.05 * seed
        entropy = np.full(STEPS, 1.1) - 0.2 * steps / STEPS
        if lr == 1e-4:
            entropy[10:] = 0.01
        walls = 1.7e9 + 3600 * i + 30.0 * steps
        metrics_record(run.id, {
            "train/loss": Columns.of(steps, loss, walls),
            "policy/entropy": Columns.of(steps, entropy + 0.02 * rng.standard_normal(STEPS), walls),
            "tokens_seen": Columns.of(steps, 4096.0 * (steps + 1) * (1 + seed), walls),
        })  # fmt: skip
        runs.append(run)
    Run.objects.filter(pk__in=[r.pk for r in runs[:4]]).update(status="succeeded")
    bench = Dataset.objects.create(project=project, name="aime24", kind="problems", status="ready")
    for run in runs[:3]:
        for step in (50, 100, 150):
            Evaluation.objects.create(
                run=run, benchmark=bench, step=step, k=16, status="succeeded",
                metrics={"avg@16": 0.1 + step / 1000 + 0.01 * (run.id % 3), "pass@1": 0.15 + step / 900,
                         "pass@16": 0.3 + step / 600},
            )  # fmt: skip
    return runs


def login(page, base_url: str, next_path: str) -> None:
    page.goto(f"{base_url}{next_path}")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(re.escape(next_path.split("?")[0])))


def new_page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(20_000)
    return page


def row_names(page) -> list[str]:
    return [t.strip() for t in page.locator('[data-testid="run-link"]').all_text_contents()]


def chart(key: str) -> str:
    return f'[data-testid="compare-chart"][data-key="{key}"]'


def traces(page, key: str) -> list[dict]:
    """The lines a chart draws (the canvas layer's, compare-canvas.js): name, kind, fill, x and y."""
    return page.evaluate(
        """sel => (document.querySelector(sel).orlabLines || []).map(t => ({
               name: t.name, kind: (t.meta || {}).kind, fill: t.fill || null,
               x: Array.from(t.x || []), y: Array.from(t.y || []).map(v => v === null ? null : Number(v)) }))""",
        chart(key),
    )


# Where point j of line i of a chart is on the page (client pixels), on the axes as plotly drew them.
POINT_AT = """([sel, i, j]) => { const p = document.querySelector(sel); const t = p.orlabLines[i];
  const xa = p._fullLayout.xaxis, ya = p._fullLayout.yaxis, r = p.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(t.x[j]), r.top + ya._offset + ya.l2p(t.y[j])]; }"""

PIXELS_OF = """async ([b64, colour]) => {
  const img = new Image();
  await new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; img.src = "data:image/png;base64," + b64; });
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext("2d");
  ctx.fillStyle = colour;  // the browser parses any CSS colour to #rrggbb
  const hex = ctx.fillStyle;
  const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (Math.abs(px[i] - want[0]) < 10 && Math.abs(px[i + 1] - want[1]) < 10 && Math.abs(px[i + 2] - want[2]) < 10) n++;
  }
  return n;
}"""


def png_pixels_of(page, png: bytes, colour: str) -> int:
    """How many pixels of a PNG are (nearly) the CSS colour, decoded by the browser."""
    return page.evaluate(PIXELS_OF, [base64.b64encode(png).decode(), colour])


def wait_drawn(page, key: str, points: int) -> None:
    wait_for(
        lambda: int(page.get_attribute(chart(key), "data-points") or 0) == points,
        timeout=20,
        message=f"{points} points on {key}",
    )


@pytest.mark.slow
def test_filter_the_table_and_compare_three_runs(live_server, project, sweep, browser):
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/projects/{project.pk}/")
    assert len(row_names(page)) == 5
    assert page.locator('[data-testid="collapse-flag"]').count() == 1  # the lr=1e-4 run

    # a config filter from the builder row: lr > 1e-6
    page.fill('[data-testid="cf-path"]', "lr")
    page.select_option('[data-testid="cf-op"]', "gt")
    page.fill('[data-testid="cf-value"]', "1e-6")
    page.click('[data-testid="filter-submit"]')
    page.wait_for_url(re.compile(r"config\.lr__gt=1e-6"))
    assert sorted(row_names(page)) == ["grpo-2", "grpo-3", "grpo-4"]
    assert "lr > 1e-6" in page.inner_text('[data-testid="config-chip"]')

    # a metric column (mean of the last 20 losses), then sort by it, descending
    page.select_option('[data-testid="add-col-agg"]', "mean_last")
    assert page.is_visible('[data-testid="add-col-n"]')
    page.fill('[data-testid="add-col-key"]', "train/loss")
    page.fill('[data-testid="add-col-n"]', "20")
    page.click('[data-testid="filter-submit"]')
    page.wait_for_url(re.compile(r"col=metric%3Atrain%2Floss%3Amean_last_20"))
    header = page.locator('[data-testid="sort-col"]', has_text="train/loss · mean last 20")
    header.click()
    page.wait_for_url(re.compile(r"ordering=metric"))
    page.locator('[data-testid="sort-col"]', has_text="train/loss · mean last 20").click()
    page.wait_for_url(re.compile(r"ordering=-metric"))
    means = [float(t) for t in page.locator("tbody tr td:last-child").all_text_contents()]
    assert means == sorted(means, reverse=True) and len(means) == 3

    # save the view, clear the filters, apply the view again
    page.fill('[data-testid="view-name"]', "fast lrs")
    page.click('[data-testid="save-view"]')
    page.wait_for_selector('[data-testid="saved-view"]')
    page.click('[data-testid="clear-filters"]')
    wait_for(lambda: len(row_names(page)) == 5, timeout=10, message="the unfiltered table")
    page.click('[data-testid="saved-view"]')
    page.wait_for_url(re.compile(r"config\.lr__gt=1e-6"))
    assert len(row_names(page)) == 3
    page.screenshot(path="/tmp/orlab-cmp-runs-table.png", full_page=True)

    # select three runs and compare them
    page.check("#select-all")
    assert page.text_content("#selected-count") == "3 selected"
    page.click('[data-testid="compare-button"]')
    page.wait_for_url(re.compile(r"/compare/\?runs=[\d,]+$"))
    wait_drawn(page, "train/loss", 3 * STEPS)
    assert page.locator('[data-testid="legend-item"]').count() == 3
    legend = page.locator('[data-testid="legend-item"]').all_text_contents()
    assert sorted(legend) == ["lr=0.0001, seed=0⚠", "lr=1e-05, seed=0", "lr=1e-05, seed=1"]
    assert page.locator('[data-testid="compare-chart"]').count() >= 1
    page.screenshot(path="/tmp/orlab-cmp-three-runs.png", full_page=True)

    # the API token page, from the top bar: create, use, revoke
    page.click('[data-testid="nav-api-token"]')
    page.click('[data-testid="token-create"]')
    key = page.input_value('[data-testid="token-value"]')
    assert len(key) == 40
    page.screenshot(path="/tmp/orlab-cmp-api-token.png", full_page=True)
    r = page.request.get(f"{live_server.url}/api/runs/", headers={"Authorization": f"Token {key}"})
    assert r.ok
    page.click('[data-testid="token-revoke"]')
    page.wait_for_selector('[data-testid="no-token"]')
    assert "revoked" in page.inner_text('[data-testid="messages"]')
    assert not errors, errors


@pytest.mark.slow
def test_compare_page_controls_and_exports(live_server, project, sweep, browser, tmp_path):
    errors: list[str] = []
    page = new_page(browser, errors)
    ids = ",".join(str(r.id) for r in sweep[:4])
    login(page, live_server.url, f"/compare/?runs={ids}&key=train/loss&key=policy/entropy")
    wait_drawn(page, "train/loss", 4 * STEPS)
    wait_drawn(page, "policy/entropy", 4 * STEPS)

    # smoothing: at the default 0.6 each run is a faint raw curve plus its EMA (every raw layer
    # under every smoothed line)
    drawn = traces(page, "train/loss")
    assert [t["kind"] for t in drawn] == ["raw"] * 4 + ["smoothed"] * 4
    raw, smooth06 = drawn[0]["y"], drawn[4]["y"]
    assert raw != smooth06 and np.std(np.diff(smooth06)) < np.std(np.diff(raw))
    # hover: the canvas layer's own tooltip names the nearest visible run, the step and the value
    x, y = page.evaluate(POINT_AT, [chart("train/loss"), 4, 100])
    page.mouse.move(x, y)
    tip = f'{chart("train/loss")} [data-testid="chart-hover"]'
    wait_for(lambda: page.is_visible(tip), timeout=5, message="the hover tooltip")
    first = page.evaluate(f"document.querySelector('{chart('train/loss')}').orlabLines[4].meta.runs[0]")
    assert page.inner_text(tip).startswith(next(r.name for r in sweep if r.id == first))
    assert f"step 100: {smooth06[100]:.6g}"[:14] in page.inner_text(tip)
    page.mouse.move(5, 5)
    wait_for(lambda: not page.is_visible(tip), timeout=5, message="the tooltip gone")
    page.evaluate("""() => { const s = document.getElementById('smooth'); s.value = '0.95';
                             s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""")
    wait_for(lambda: traces(page, "train/loss")[4]["y"] != smooth06, timeout=5, message="a smoother curve")
    smooth095 = traces(page, "train/loss")[4]["y"]
    assert np.std(np.diff(smooth095)) < np.std(np.diff(smooth06))
    assert page.text_content('[data-testid="smooth-value"]') == "0.95"
    assert "smooth=0.95" in page.url
    # debiased EMA: the first smoothed point is the first raw point
    assert smooth095[0] == pytest.approx(raw[0])
    page.screenshot(path="/tmp/orlab-cmp-smoothing.png", full_page=True)

    # group over seeds: one mean curve per lr with a min-max band between its two seeds
    page.select_option('[data-testid="group-by"]', "~seed")
    wait_for(
        lambda: any(t["fill"] == "tonexty" for t in traces(page, "train/loss")), timeout=5, message="a band"
    )
    drawn = traces(page, "train/loss")
    assert [t["kind"] for t in drawn] == ["min", "max", "mean"] * 2
    lower, upper, mean = drawn[0]["y"], drawn[1]["y"], drawn[2]["y"]
    assert all(lo <= m <= hi for lo, m, hi in zip(lower, mean, upper, strict=True))
    assert max(hi - lo for lo, hi in zip(lower, upper, strict=True)) > 0.01
    assert drawn[2]["name"].startswith("lr=1e-06") and "(2 runs)" in drawn[2]["name"]
    legend = page.locator('[data-testid="legend-item"]').all_text_contents()
    assert legend == ["lr=1e-06 (2)", "lr=1e-05 (2)"]
    page.select_option('[data-testid="band"]', "std")
    wait_for(lambda: traces(page, "train/loss")[0]["kind"] == "mean-std", timeout=5, message="a std band")
    page.screenshot(path="/tmp/orlab-cmp-group-band.png", full_page=True)

    # the config diff shows the differing fields; the others on demand
    diff = '[data-testid="config-diff"]'
    assert page.is_visible(f'{diff} tr[data-path="lr"]') and page.is_visible(f'{diff} tr[data-path="seed"]')
    assert not page.is_visible(f'{diff} tr[data-path="model"]')
    assert page.inner_text(f'{diff} tr[data-path="lr"]').split("\t")[1:] == [
        "1e-06",
        "1e-06",
        "1e-05",
        "1e-05",
    ]
    page.check('[data-testid="config-all"]')
    assert page.is_visible(f'{diff} tr[data-path="model"]') and "all=1" in page.url

    # CSV of exactly what is shown (the grouped, smoothed curves), as a download
    with page.expect_download() as info:
        page.click('[data-testid="export-csv"]')
    download = info.value
    assert download.suggested_filename.startswith("orlab-compare-") and download.suggested_filename.endswith(
        ".csv"
    )
    path = tmp_path / "compare.csv"
    download.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert set(rows[0]) == {"chart", "series", "runs", "run_names", "kind", "x_axis", "x", "y"}
    loss_means = [r for r in rows if r["chart"] == "train/loss" and r["kind"] == "mean"]
    assert len(loss_means) == 2 * STEPS
    # each row names its runs (a group's mean: both seeds' runs)
    names = {r.id: r.name for r in sweep[:4]}
    assert loss_means[0]["run_names"] == " ".join(names[int(i)] for i in loss_means[0]["runs"].split())
    assert len(loss_means[0]["run_names"].split()) == 2
    assert float(loss_means[0]["y"]) == pytest.approx(mean[0])
    assert {r["kind"] for r in rows if r["chart"] == "aime24 v1"} == {"avg@16", "pass@1", "pass@16"}

    # PNG of one chart
    with page.expect_download() as info:
        page.locator(".chart-card", has=page.locator(chart("train/loss"))).locator(".png-button").click()
    assert info.value.suggested_filename == "orlab-train_loss.png"
    png = tmp_path / "chart.png"
    info.value.save_as(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # the canvas's lines, a title and a legend with the plot: taller than the chart (at scale 2)
    width, height = struct.unpack(">II", data[16:24])
    box = page.locator(chart("train/loss")).bounding_box()
    assert width == round(2 * box["width"]) and height > 2 * box["height"] + 40
    mean_colour = page.evaluate(f"document.querySelector('{chart('train/loss')}').orlabLines[2].line.color")
    assert png_pixels_of(page, data, mean_colour) > 100  # the first group's mean line is in the image

    # x axes: a logged counter (aligned by step), relative time; log y
    page.select_option('[data-testid="group-by"]', "")
    page.select_option('[data-testid="x-mode"]', "key:tokens_seen")
    wait_for(lambda: "xkey=tokens_seen" in page.url, timeout=5, message="x by tokens")
    wait_drawn(page, "train/loss", 4 * STEPS)
    wait_for(
        lambda: traces(page, "train/loss")[4]["x"][:2] == [4096.0, 8192.0], timeout=10, message="tokens as x"
    )
    seed1 = traces(page, "train/loss")[5]["x"]
    assert seed1[:2] == [8192.0, 16384.0]  # seed 1 sees twice the tokens per step
    page.select_option('[data-testid="x-mode"]', "rel")
    wait_for(
        lambda: traces(page, "train/loss")[4]["x"][:2] == [0, 0.5], timeout=10, message="relative minutes"
    )
    # wall time: a date axis (x in ms); the canvas puts the lines inside the plot area and the
    # hover names the point's time
    page.select_option('[data-testid="x-mode"]', "wall")
    wait_for(
        lambda: traces(page, "train/loss")[4]["x"][0] == (1.7e9 + 3600 * 0) * 1000,
        timeout=10,
        message="wall ms",
    )
    inside = page.evaluate(
        """sel => { const p = document.querySelector(sel); const xa = p._fullLayout.xaxis;
           const t = p.orlabLines[4]; const a = xa.l2p(t.x[0]), b = xa.l2p(t.x[t.x.length - 1]);
           return xa.type === 'date' && a >= -1 && b <= xa._length + 1 && b - a > xa._length / 3; }""",
        chart("train/loss"),
    )
    assert inside
    x, y = page.evaluate(POINT_AT, [chart("train/loss"), 4, 10])
    page.mouse.move(x, y)
    wait_for(
        lambda: "2023-11-14 22:18:20" in page.inner_text(tip), timeout=5, message="the time in the hover"
    )
    page.mouse.move(5, 5)
    page.select_option('[data-testid="x-mode"]', "rel")
    wait_for(lambda: traces(page, "train/loss")[4]["x"][:2] == [0, 0.5], timeout=10, message="relative again")
    page.check('[data-testid="log-toggle"]')
    wait_for(lambda: "log=1" in page.url, timeout=5, message="log in the URL")
    assert page.evaluate(f"document.querySelector('{chart('train/loss')}').layout.yaxis.type") == "log"

    # the whole state is in the URL: a reload (or a shared link) shows the same view
    url = page.url
    page.goto(url)
    wait_drawn(page, "train/loss", 4 * STEPS)
    assert page.input_value('[data-testid="x-mode"]') == "rel"
    assert page.input_value('[data-testid="smooth"]') == "0.95"
    assert page.is_checked('[data-testid="log-toggle"]') and page.is_checked('[data-testid="config-all"]')
    assert page.locator('[data-testid="eval-chart"]').count() == 1
    page.screenshot(path="/tmp/orlab-cmp-state.png", full_page=True)
    assert not errors, errors


@pytest.mark.slow
def test_running_runs_keep_updating_every_chart(live_server, project, sweep, browser):
    """sweep[4] is running (external): points posted for two keys reach both charts; the collapse
    warning is on the page."""
    errors: list[str] = []
    page = new_page(browser, errors)
    running = sweep[4]
    ids = f"{sweep[0].id},{running.id}"
    login(page, live_server.url, f"/compare/?runs={ids}&key=train/loss&key=policy/entropy&smooth=0")
    wait_drawn(page, "train/loss", 2 * STEPS)
    assert not page.locator("#live-note").is_hidden()
    assert "grpo-4" in page.inner_text('[data-testid="collapse-warning"]')
    assert len(traces(page, "train/loss")) == 2  # smoothing 0: raw curves only

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Content-Type": "application/json"}
    points = [
        {"key": k, "step": STEPS + s, "value": 0.5}
        for k in ("train/loss", "policy/entropy")
        for s in range(10)
    ]
    r = page.request.post(f"{live_server.url}/api/runs/{running.id}/metrics/", data=points, headers=headers)
    assert r.ok, r.text()
    t0 = time.monotonic()
    wait_drawn(page, "train/loss", 2 * STEPS + 10)
    wait_drawn(page, "policy/entropy", 2 * STEPS + 10)
    assert time.monotonic() - t0 < 8
    r = page.request.post(
        f"{live_server.url}/api/runs/{running.id}/finish/", data={"status": "succeeded"}, headers=headers
    )
    assert r.ok
    badge = f'[data-run-status="{running.id}"]'
    wait_for(lambda: page.text_content(badge).strip() == "succeeded", timeout=10, message="the badge")
    wait_for(lambda: page.locator("#live-note").is_hidden(), timeout=10, message="live off")
    page.screenshot(path="/tmp/orlab-cmp-live.png", full_page=True)
    assert not errors, errors
