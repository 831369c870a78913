"""The run page's evaluations chart (issue 15 point 5) in headless Chromium: a metric with intervals
(metrics["<name>_ci"] = [lo, hi]) is drawn with a filled 95 % band between lo and hi; evaluations of
one benchmark under two protocols (here two temperatures) draw two lines, the legend naming each
protocol key; the table shows the intervals and the key. The compare page draws every metric of the
run the same way (a line per protocol, the run's intervals as bands)."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def evaluated(alice, project):
    from webapp.runs import services
    from webapp.runs.eval_protocol import protocol_key

    run = services.run_create(user=alice, project=project, name="grpo", kind="external", config={})
    base = {"k": 8, "n": 8, "top_p": 1.0, "max_new_tokens": 512, "verifier": "v1", "problems": 40}
    hot, cold = {**base, "temperature": 1.0}, {**base, "temperature": 0.6}
    for step, acc in ((10, 0.3), (20, 0.4), (30, 0.5)):
        services.evaluation_record(
            run.id, step, "math500",
            {"pass@4": acc, "pass@4_ci": [acc - 0.05, acc + 0.06], "maj@4": acc - 0.1},
            {**hot, "seed": step},  # the seed is not part of the protocol's key
        )  # fmt: skip
    for step, acc in ((10, 0.35), (30, 0.55)):
        services.evaluation_record(
            run.id, step + 1, "math500", {"pass@4": acc, "pass@4_ci": [acc - 0.04, acc + 0.04]}, cold
        )
    return run, protocol_key(hot), protocol_key(cold)


TRACES = """() => document.getElementById('eval-chart').data.map((t) => ({
  name: t.name, band: (t.meta || {}).band || null, metric: (t.meta || {}).metric,
  protocol: (t.meta || {}).protocol, x: Array.from(t.x), y: Array.from(t.y), fill: t.fill || null,
  showlegend: t.showlegend !== false }))"""


def test_intervals_draw_bands_and_protocols_never_share_a_line(live_server, browser, evaluated):
    run, hot, cold = evaluated
    assert hot != cold
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/"))
    page.wait_for_selector("#eval-chart[data-lines='3']")
    traces = page.evaluate(TRACES)
    lines = [t for t in traces if not t["band"]]
    # pass@4 under each protocol, maj@4 (no interval) under the hot one
    assert sorted((t["metric"], t["protocol"]) for t in lines) == sorted(
        [("pass@4", hot), ("pass@4", cold), ("maj@4", hot)]
    )
    by = {(t["metric"], t["protocol"]): t for t in lines}
    assert by[("pass@4", hot)]["x"] == [10, 20, 30] and by[("pass@4", cold)]["x"] == [11, 31]
    assert all(f"protocol {t['protocol']}" in t["name"] for t in lines)  # the legend tells them apart
    # a band (lo, then hi filled to it) for each pass@4 line, none for maj@4
    assert page.get_attribute("#eval-chart", "data-bands") == "2"
    for key, ys in ((hot, (0.3, 0.4, 0.5)), (cold, (0.35, 0.55))):
        lo = next(t for t in traces if t["band"] == "lo" and t["protocol"] == key)
        hi = next(t for t in traces if t["band"] == "hi" and t["protocol"] == key)
        assert traces.index(hi) == traces.index(lo) + 1 and hi["fill"] == "tonexty"
        assert not lo["showlegend"] and not hi["showlegend"]
        assert all(a < y < b for a, y, b in zip(lo["y"], ys, hi["y"], strict=True))
        assert lo["y"] == pytest.approx([y - (0.05 if key == hot else 0.04) for y in ys])
    # the band is drawn: a filled path in the plot
    fills = page.evaluate(
        "() => [...document.querySelectorAll('#eval-chart .scatterlayer .js-fill')]"
        ".filter((p) => (p.getAttribute('d') || '').length > 10).length"
    )
    assert fills == 2
    table = page.inner_text("[data-testid=evaluations-table]")
    assert "pass@4=0.3 [0.25, 0.36]" in table and f"key={hot}" in table and f"key={cold}" in table
    page.screenshot(path="/tmp/orlab-eval-bands.png")

    # the compare page: every metric, a line per protocol, each run's intervals as bands
    page.goto(f"{live_server.url}/compare/?runs={run.pk}")
    chart = '[data-testid="eval-chart"][data-key="math500"]'
    page.wait_for_function(f"() => (document.querySelector('{chart}')?.data || []).length >= 7")
    traces = page.evaluate(
        f"""() => document.querySelector('{chart}').data.map((t) => ({{
          band: t.meta.band || null, kind: t.meta.kind, protocol: t.meta.protocol, x: Array.from(t.x),
          name: t.name || "" }}))"""
    )
    lines = [t for t in traces if not t["band"]]
    assert sorted((t["kind"], t["protocol"]) for t in lines) == sorted(
        [("pass@4", hot), ("pass@4", cold), ("maj@4", hot)]
    )
    assert all(f"protocol {t['protocol']}" in t["name"] for t in lines)
    bands = sorted((t["band"], t["protocol"]) for t in traces if t["band"])
    assert bands == sorted([("lo", hot), ("hi", hot), ("lo", cold), ("hi", cold)])
    page.screenshot(path="/tmp/orlab-eval-bands-compare.png")
    assert not errors, errors
