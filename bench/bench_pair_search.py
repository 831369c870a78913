"""Issue 3: full-text search in the pair browser over 1,000,000 pairs (target: first page <= 300 ms).

``--pairs`` generated pairs (bench/pair_data.py) are imported with dataset_import (as a user's
upload would be; no VACUUM afterwards, so the table is as fresh as right after an import), then
gunicorn serves the pair browser, GET /datasets/<id>/pairs/?q=..., its default ordering (by row)
and page size (50), with a logged-in session. Server time = Server-Timing header (the whole Django
request: session, queries, template); median of ``--repeat`` requests after ``--warmup`` ones; the
first, cold request of each URL is reported too. Searches span the range of match counts:

* a common word (in ~19 % of the pairs), two common words, either of two common words;
* common words with a source filter, a mid-frequency word (~0.4 %) alone and with a source filter;
* a word in 7 pairs of the million; a page deep in a common word's matches;
* the unfiltered list and the JSON API's search, for comparison.

    python -m bench.bench_pair_search [--pairs 1000000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    _TMP,
    PY,
    ROOT,
    Client,
    Server,
    bench_database,
    cli,
    result,
    session_cookie,
    timed_requests,
)
from bench.pair_data import RARE_ROWS, RARE_WORD

TARGET_MS = 300.0

# (label, query string); the matches are counted in the database, not assumed
SEARCHES = [
    ("common word", "q=explain"),
    ("two common words", "q=explain+answer"),
    ("either of two common words", "q=explain+or+code"),
    ("common word, source filter", "q=explain&source=magpie_ultra"),
    ("two common words, source filter", "q=explain+answer&source=offsetbias"),
    ("mid-frequency word", "q=kalomi"),
    ("mid-frequency word, source filter", "q=kalomi&source=helpsteer2"),
    (f"rare word ({RARE_ROWS} pairs)", f"q={RARE_WORD}"),
    ("common word, page 100", "q=explain&page=100"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path, help="import this JSONL file instead of generating one")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)


def _matches(dataset, query: str) -> int:
    """Exact number of pairs the query selects (no cap), for the report."""
    from urllib.parse import parse_qs

    from webapp.datasets.selectors import pair_list

    p = {k: v[0] for k, v in parse_qs(query).items()}
    return pair_list(dataset, search=p.get("q", ""), source=p.get("source", "")).count()


def run(args: argparse.Namespace) -> list[dict]:
    path = args.file
    if path is None:
        _TMP.mkdir(parents=True, exist_ok=True)
        path = _TMP / f"pairs-{args.pairs}.jsonl"
        subprocess.run([PY, "-m", "bench.pair_data", str(path), str(args.pairs)], cwd=ROOT, check=True)
    rows = []
    try:
        with bench_database() as fx:
            from webapp.datasets import services

            ds = services.dataset_create_for_import(
                user=fx.user,
                project=fx.project,
                name="bench",
                kind="preference",
                path=path,
                filename=path.name,
            )
            t0 = time.perf_counter()
            services.dataset_import(ds, path)
            print(f"imported {ds.row_count:,} pairs in {time.perf_counter() - t0:.1f} s", flush=True)
            cookie = session_cookie(fx.user)
            with Server() as server:
                html = Client(server.url, cookie=cookie)
                api = Client(server.url, fx.token)
                base = f"/datasets/{ds.id}/pairs/"
                # each keep-alive connection stays with one gunicorn worker: its first request pays
                # for Django's start (imports, templates), not for the search, so it is made first
                for client, url in ((html, base), (api, f"/api/datasets/{ds.id}/pairs/")):
                    if client.request("GET", url).status != 200:
                        raise RuntimeError(f"GET {url} failed\n{server.log_tail()}")
                plan = [(label, html, f"{base}?{q}", q) for label, q in SEARCHES]
                plan.append(("no search (unfiltered list)", html, base, ""))
                plan.append(
                    (
                        "JSON API, common word",
                        api,
                        f"/api/datasets/{ds.id}/pairs/?search=explain",
                        "q=explain",
                    )
                )
                for label, client, url, query in plan:
                    cold = client.request("GET", url)
                    if cold.status != 200:
                        raise RuntimeError(f"GET {url} -> {cold.status}\n{server.log_tail()}")
                    m = timed_requests(client, url, warmup=args.warmup, repeat=args.repeat)
                    shown = re.search(rb'data-testid="pair-count"[^>]*>([^<]*)<', cold.body)
                    matches = _matches(ds, query) if query else ds.row_count
                    print(
                        f"{label}: {matches:,} matches; cold {cold.server_ms} ms; {m['server_ms']}",
                        flush=True,
                    )
                    rows.append(
                        result(
                            "3b",
                            f"pair search over {ds.row_count:,} pairs: {label}",
                            m["server_ms"]["median"],
                            "ms",
                            TARGET_MS,
                            "lower",
                            note=f"GET {url.replace(str(ds.id), '<id>', 1)}; {matches:,} matching pairs"
                            + (f" (page says {shown.group(1).decode().strip()!r})" if shown else "")
                            + f"; first (cold) request {cold.server_ms} ms; p90 {m['server_ms']['p90']} ms",
                            url=url,
                            matches=matches,
                            cold_server_ms=cold.server_ms,
                            **m,
                        )
                    )
                html.close()
                api.close()
    finally:
        if args.file is None:
            path.unlink(missing_ok=True)
    return rows


if __name__ == "__main__":
    sys.exit(cli("orlab bench 3b: pair search over a million pairs", run, configure))
