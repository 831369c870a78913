"""The compare page in Chromium at 50-100 runs (issue 12, point 8): what a user waits for.

Seeds ``--runs`` runs (default 100) x ``--keys`` metric keys x ``--points`` steps into a throw-away
database (``orlab_bench_compare_page``), in 10 run groups, serves it with the benchmarks' gunicorn
(bench.common.Server) and drives Debian's /usr/bin/chromium with Playwright in a persistent (warm)
profile: every page is loaded once before it is measured, so plotly.js comes from the HTTP and code
caches as it does for a returning user.

Measured (medians over ``--repeat`` loads; time from navigation start, performance.now()):
  P1  50 runs x 10 keys, every chart holds its traces: the viewport is tall enough for all 10
      charts to be in view, so all of them are drawn (the worst case of lazy drawing). Goal 1.0 s.
  P1v the same in a 1500 x 1000 viewport: the charts in view hold their traces (the others draw
      when scrolled to).
  P1t the longest main-thread task during P1 (PerformanceObserver 'longtask'). Goal <= 200 ms.
  P2  a smoothing step (slider input) at 50 runs, 1500 x 1000 viewport: from the input event until
      every chart in view (within 200 px of the viewport) is restyled, to the end of the next
      frame. Goal 150 ms.
  P3  a legend click (hide one run on every chart), the same way. Goal 150 ms.
      P2 and P3 also report the renderer's main-thread task time per step / click (Chromium's
      TaskDuration metric): the page's own work, less inflated by machine load than the latency.
  P4  100 runs grouped into 10 groups (group=@group), tall viewport, every chart holds its traces.
      Goal 1.0 s.
  P5  100 runs ungrouped (raw layer off), tall viewport, for reference.
Also reported: the compare JSON transferred (gzip) and decoded, and the JS heap after load.

    python -m bench.bench_compare_page [--runs 100] [--points 20000] [--repeat 5] [--before DIR]

--before DIR also measures the page as served from another tree (e.g. ``git archive 0891473 | tar
-x -C DIR``: the page before this work) against the same database: both trees are served at once and
every measurement (P1, P1v, P2+P3, P4, P5) runs for this tree and then for that one, so both see the
same machine load. Rows of that tree are marked "before". Every row records the 1-minute load
average at its start (``load_avg_1m``). --only P1,P23 runs some of the measurements.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

os.environ.setdefault("ORLAB_BENCH_DB", "orlab_bench_compare_page")
os.environ.setdefault("ORLAB_BENCH_BROKER", "redis://127.0.0.1:6379/11")

from bench.common import ReadmeServer, Server, bench_database, cli, result, session_cookie, summarize  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
KEYS = [
    "train/loss", "train/reward", "policy/entropy", "policy/kl", "policy/clip_frac",
    "optim/grad_norm", "optim/lr", "rollout/response_length", "rollout/tokens_seen", "eval/accuracy",
]  # fmt: skip
GROUPS = 10
RESULTS = Path(__file__).resolve().parent / "compare_page_results.json"

# Collected in the page from navigation start: long tasks, the first draw of every chart.
INIT_SCRIPT = """
window.__longtasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longtasks.push(e.duration); })
  .observe({ type: "longtask", buffered: true });
window.__draws = {};
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target;
    if (el.dataset && el.dataset.traces && !(el.dataset.key in window.__draws)) window.__draws[el.dataset.key] = performance.now();
  }
}).observe(document, { attributes: true, attributeFilter: ["data-traces"], subtree: true });
"""

ALL_DRAWN = """n => Object.keys(window.__draws).length >= n"""
IN_VIEW_DRAWN = """() => { const cs = [...document.querySelectorAll('[data-testid=compare-chart]')]
  .filter(c => c.getBoundingClientRect().top < innerHeight);
  return cs.length > 0 && cs.every(c => c.dataset.key in window.__draws); }"""
LOAD_NUMBERS = """() => {
  const cs = [...document.querySelectorAll('[data-testid=compare-chart]')].filter(c => c.dataset.key in window.__draws);
  const api = performance.getEntriesByType('resource').filter(e => e.name.includes('/api/compare/'));
  return {
    ready_ms: Math.max(...cs.map(c => window.__draws[c.dataset.key])),
    charts: cs.length,
    traces: cs.map(c => Number(c.dataset.traces)),
    longest_task_ms: Math.max(0, ...window.__longtasks),
    long_tasks: window.__longtasks.length,
    json_transfer_bytes: api.reduce((a, e) => a + e.transferSize, 0),
    json_decoded_bytes: api.reduce((a, e) => a + e.decodedBodySize, 0),
    heap_bytes: performance.memory ? performance.memory.usedJSHeapSize : null,
  }; }"""
# From the event until every chart in view is up to date (compare.js restyles them one per task,
# on screen first; #charts[data-pending] counts those waiting), to the end of the next frame.
SETTLED = """() => new Promise(r => { const check = () => ['0', undefined].includes(document.getElementById('charts').dataset.pending)
  ? requestAnimationFrame(() => setTimeout(r, 0)) : setTimeout(check, 0); check(); })"""
SMOOTH_STEP = (
    """async v => {
  const s = document.getElementById('smooth'); const t0 = performance.now(); window.__longtasks = [];
  s.value = String(v); s.dispatchEvent(new Event('input'));
  await ("""
    + SETTLED
    + """)();
  return performance.now() - t0; }"""
)
LEGEND_CLICK = (
    """async i => {
  const b = document.querySelectorAll('[data-testid=legend-item]')[i]; const t0 = performance.now();
  b.click();
  await ("""
    + SETTLED
    + """)();
  return performance.now() - t0; }"""
)


def curves(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / n
    out = {}
    for j, key in enumerate(KEYS):
        noise = 0.05 * rng.standard_normal(n)
        if "tokens" in key:
            out[key] = np.cumsum(rng.integers(800, 1200, n)).astype(np.float64)
        elif "lr" in key:
            out[key] = 1e-6 * np.minimum(1.0, 20 * t) * (1 - 0.9 * t)
        else:
            out[key] = np.exp(-(3 + seed % 5) * t) * (1 + j / 10) + noise
    return out


def seed(fx, n_runs: int, points: int) -> list[int]:
    from django.utils import timezone

    from webapp.runs.metric_store import Columns, metrics_record
    from webapp.runs.models import Run

    ids, t0 = [], time.perf_counter()
    steps = np.arange(points, dtype=np.int64)
    walls = 1.7e9 + steps * 0.5
    for i in range(n_runs):
        now = timezone.now()
        run = Run.objects.create(
            project=fx.project, name=f"sweep-{i:03d}", kind=Run.EXTERNAL, status=Run.Status.SUCCEEDED,
            config={"lr": [1e-6, 3e-6, 1e-5][i % 3], "seed": i // 3}, group=f"g{i % GROUPS}",
            started_at=now, finished_at=now, created_by=fx.user,
        )  # fmt: skip
        metrics_record(run.id, {k: Columns.of(steps, v, walls) for k, v in curves(points, i).items()})
        ids.append(run.id)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{n_runs} runs seeded ({time.perf_counter() - t0:.0f} s)", flush=True)
    return ids


def compare_url(base: str, ids: list[int], extra: str = "") -> str:
    keys = "".join(f"&key={quote(k, safe='')}" for k in KEYS)
    return f"{base}/compare/?runs={','.join(map(str, ids))}{keys}{extra}"


def load(page, url: str, *, all_charts: bool) -> dict:
    page.goto(url, wait_until="commit")
    if all_charts:
        page.wait_for_function(ALL_DRAWN, arg=len(KEYS), timeout=120_000)
    else:
        page.wait_for_function(IN_VIEW_DRAWN, timeout=120_000)
    page.wait_for_timeout(300)  # let a trailing long task land in the observer
    return page.evaluate(LOAD_NUMBERS)


def measure_loads(context, url: str, *, all_charts: bool, viewport: dict, repeat: int) -> dict:
    page = context.new_page()
    page.set_viewport_size(viewport)
    load(page, url, all_charts=all_charts)  # warm: HTTP cache, V8 code cache, server caches
    runs = [load(page, url, all_charts=all_charts) for _ in range(repeat)]
    page.close()
    out = {k: summarize([r[k] for r in runs]) for k in ("ready_ms", "longest_task_ms", "heap_bytes")}
    last = runs[-1]
    out.update(
        {k: last[k] for k in ("charts", "traces", "json_transfer_bytes", "json_decoded_bytes", "long_tasks")}
    )
    out["viewport"] = viewport
    return out


def measure_interactions(context, url: str, repeat: int) -> dict:
    page = context.new_page()
    page.set_viewport_size({"width": 1500, "height": 1000})
    load(page, url, all_charts=False)
    in_view = page.evaluate("Object.keys(window.__draws).length")
    # The renderer's main-thread task time per interaction (Chromium's Performance.getMetrics
    # TaskDuration): the page's own work, which under load grows less than the latency (that also
    # waits for frames, raster and the other processes to get a CPU).
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def task_ms() -> float:
        got = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        return got["TaskDuration"] * 1000

    smooth, legend = [], []
    steps = max(repeat, 5) * 2
    t0 = task_ms()
    for i in range(steps):
        smooth.append(page.evaluate(SMOOTH_STEP, [0.7, 0.8][i % 2]))
    smooth_main = (task_ms() - t0) / steps
    smooth_task = page.evaluate("Math.max(0, ...window.__longtasks)")  # of the last step
    t0 = task_ms()
    for i in range(steps):
        legend.append(page.evaluate(LEGEND_CLICK, i // 2))  # hide, then show again
    legend_main = (task_ms() - t0) / steps
    redraws = page.evaluate(
        "[...document.querySelectorAll('[data-testid=compare-chart]')].map(c => Number(c.dataset.draws || 0))"
    )
    page.close()
    return {
        "smooth_ms": summarize(smooth),
        "legend_ms": summarize(legend),
        "charts_in_view": in_view,
        "draws_per_chart_after": redraws,
        "longest_task_smoothing_ms": smooth_task,
        "main_thread_ms_per_smoothing_step": round(smooth_main, 1),
        "main_thread_ms_per_legend_click": round(legend_main, 1),
    }


class TreeServer(Server):
    """bench.common.Server started from another source tree (the same venv and database)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def start(self, timeout: float = 90.0) -> Server:
        from bench import common

        saved, common.ROOT = common.ROOT, self.root
        try:
            return super().start(timeout)
        finally:
            common.ROOT = saved


TALL = {"width": 1500, "height": 200 + 380 * ((len(KEYS) + 1) // 2)}
NORMAL = {"width": 1500, "height": 1000}


def load_note() -> dict:
    return {"load_avg_1m": round(os.getloadavg()[0], 2)}


def step_p1(context, base: str, ids: list[int], args, tag: str) -> list[dict]:
    fifty = ids[:50]
    ld = load_note()
    d = measure_loads(context, compare_url(base, fifty), all_charts=True, viewport=TALL, repeat=args.repeat)
    note = (f"{len(fifty)} runs x {len(KEYS)} keys x {args.points:,} points; {d['charts']} charts, "
            f"{d['json_transfer_bytes'] / 1e6:.2f} MB JSON transferred ({d['json_decoded_bytes'] / 1e6:.2f} MB decoded), "
            f"JS heap {d['heap_bytes'].get('median', 0) / 1e6:.0f} MB; load {ld['load_avg_1m']}")  # fmt: skip
    return [
        result(
            "P1",
            f"{tag}compare page, 50 runs, every chart holds its traces",
            d["ready_ms"]["median"],
            "ms",
            1000.0,
            "lower",
            mlflow="issue 12: 2,100 ms",
            note=note,
            **d,
            **ld,
        ),  # fmt: skip
        result(
            "P1t",
            f"{tag}longest main-thread task during P1",
            d["longest_task_ms"]["median"],
            "ms",
            200.0,
            "lower",
            mlflow="issue 12: 1,600 ms freeze",
            **d,
            **ld,
        ),  # fmt: skip
    ]


def step_p1v(context, base: str, ids: list[int], args, tag: str) -> list[dict]:
    ld = load_note()
    d = measure_loads(
        context, compare_url(base, ids[:50]), all_charts=False, viewport=NORMAL, repeat=args.repeat
    )
    return [result("P1v", f"{tag}compare page, 50 runs, charts in a 1500x1000 view", d["ready_ms"]["median"],
                   "ms", 1000.0, "lower", note=f"{d['charts']} charts drawn; load {ld['load_avg_1m']}",
                   **d, **ld)]  # fmt: skip


def step_p23(context, base: str, ids: list[int], args, tag: str) -> list[dict]:
    ld = load_note()
    d = measure_interactions(context, compare_url(base, ids[:50]), args.repeat)
    note = (f"{d['charts_in_view']} charts drawn at the start; longest task of the last step "
            f"{d['longest_task_smoothing_ms']} ms; main thread {d['main_thread_ms_per_smoothing_step']} ms "
            f"a step; load {ld['load_avg_1m']}")  # fmt: skip
    return [
        result(
            "P2",
            f"{tag}smoothing step, 50 runs",
            d["smooth_ms"]["median"],
            "ms",
            150.0,
            "lower",
            mlflow="issue 12: 1,400 ms",
            note=note,
            **d,
            **ld,
        ),  # fmt: skip
        result(
            "P3",
            f"{tag}legend click, 50 runs",
            d["legend_ms"]["median"],
            "ms",
            150.0,
            "lower",
            mlflow="issue 12: 1,400 ms",
            note=f"main thread {d['main_thread_ms_per_legend_click']} ms a click; load {ld['load_avg_1m']}",
            **d,
            **ld,
        ),  # fmt: skip
    ]


def step_p4(context, base: str, ids: list[int], args, tag: str) -> list[dict]:
    if len(ids) < 100:
        return []
    ld = load_note()
    d = measure_loads(context, compare_url(base, ids[:100], "&group=@group"), all_charts=True, viewport=TALL,
                      repeat=args.repeat)  # fmt: skip
    note = (f"10 groups of 10; longest task {d['longest_task_ms'].get('median')} ms; "
            f"{d['json_transfer_bytes'] / 1e3:.0f} kB JSON transferred; load {ld['load_avg_1m']}")  # fmt: skip
    return [result("P4", f"{tag}compare page, 100 runs in 10 groups, every chart", d["ready_ms"]["median"],
                   "ms", 1000.0, "lower", mlflow="issue 12: 2,140 ms", note=note, **d, **ld)]  # fmt: skip


def step_p5(context, base: str, ids: list[int], args, tag: str) -> list[dict]:
    if len(ids) < 100:
        return []
    ld = load_note()
    d = measure_loads(
        context, compare_url(base, ids[:100]), all_charts=True, viewport=TALL, repeat=args.repeat
    )
    note = (f"longest task {d['longest_task_ms'].get('median')} ms; "
            f"{d['json_transfer_bytes'] / 1e6:.2f} MB JSON transferred; load {ld['load_avg_1m']}")  # fmt: skip
    return [result("P5", f"{tag}compare page, 100 runs ungrouped, every chart", d["ready_ms"]["median"],
                   "ms", None, "lower", mlflow="issue 12: 4,000 ms", note=note, **d, **ld)]  # fmt: skip


STEPS = {"P1": step_p1, "P1v": step_p1v, "P23": step_p23, "P4": step_p4, "P5": step_p5}


def run(args) -> list[dict]:
    import contextlib

    from playwright.sync_api import sync_playwright

    rows: list[dict] = []
    with bench_database() as fx:
        t0 = time.perf_counter()
        ids = seed(fx, args.runs, args.points)
        print(
            f"seeded {args.runs} runs x {len(KEYS)} keys x {args.points:,} points in {time.perf_counter() - t0:.0f} s"
        )
        cookie_name, cookie_value = session_cookie(fx.user).split("=", 1)
        # --readme-server: this tree under the README's own command (gunicorn webapp.wsgi -w 4, sync)
        trees = [("", ReadmeServer() if args.readme_server else Server())] + (
            [("before: ", TreeServer(Path(args.before).resolve()))] if args.before else []
        )
        # Both trees are up at once and every measurement runs for each tree in turn (this tree
        # first, then the other), so before and after see the same machine load.
        with sync_playwright() as p, contextlib.ExitStack() as stack:
            contexts = []
            for tag, server in trees:
                stack.enter_context(server)
                profile = stack.enter_context(tempfile.TemporaryDirectory())
                context = p.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                stack.callback(context.close)
                context.add_cookies([{"name": cookie_name, "value": cookie_value, "url": server.url}])
                context.add_init_script(INIT_SCRIPT)
                contexts.append((tag, server, context))
            for name in args.only.split(",") if args.only else STEPS:
                for tag, server, context in contexts:
                    got = STEPS[name](context, server.url, ids, args, tag)
                    for r in got:
                        print(
                            f"  {r['target']:4} {r['name']}: {r['measured']} {r['unit']} ({r['note']})",
                            flush=True,
                        )
                    rows += got
    RESULTS.write_text(__import__("json").dumps(rows, indent=2, default=str))
    return rows


def configure(parser) -> None:
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--readme-server", action="store_true", help="serve with the README's command")
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", help="another source tree to measure the same way (the page before)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated steps of {', '.join(STEPS)} (default: all)"
    )


if __name__ == "__main__":
    sys.exit(cli("compare page in Chromium (issue 12, point 8)", run, configure))
