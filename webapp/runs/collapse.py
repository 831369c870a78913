"""Entropy-collapse warning: flag a run whose policy entropy falls fast towards zero early in training.

A policy whose entropy collapses early stops exploring; the OR1 (Skywork-OR1) report shows that such
runs end with worse test accuracy, so the runs table and the compare page flag them.

The rule, on the first entropy key a run has logged among ``ORLAB_ENTROPY_KEYS``:

1. *initial* = mean of the first ``ORLAB_COLLAPSE_SMOOTH`` finite values;
2. *threshold* = max(``ORLAB_COLLAPSE_RATIO`` x initial, ``ORLAB_COLLAPSE_FLOOR``);
3. the *early window* runs from the first logged step to
   first + ``ORLAB_COLLAPSE_WINDOW`` x (last step - first step) when the setting is <= 1 (a share of
   the steps logged so far), or to first + ``ORLAB_COLLAPSE_WINDOW`` steps when it is > 1;
4. the run is **flagged** when, inside the early window, the trailing mean of
   ``ORLAB_COLLAPSE_SMOOTH`` consecutive values drops below the threshold. The step where it first
   does is reported. A run whose initial entropy is already at or below the threshold is not flagged
   (it did not fall), nor is one with fewer than ``ORLAB_COLLAPSE_MIN_POINTS`` points in the window.

Settings (read with ``getattr(settings, NAME, default)``):

=========================  =====================================================  ================
ORLAB_ENTROPY_KEYS         metric keys tried in order                              ["policy/entropy",
                                                                                    "actor/entropy",
                                                                                    "entropy"]
ORLAB_COLLAPSE_RATIO       fall below this share of the initial entropy            0.1
ORLAB_COLLAPSE_WINDOW      early window: share of the steps (<= 1) or steps (> 1)  0.2
ORLAB_COLLAPSE_FLOOR       ... or below this absolute value (nats)                 0.05
ORLAB_COLLAPSE_SMOOTH      points in the trailing mean (1: raw values)             5
ORLAB_COLLAPSE_MIN_POINTS  fewer points in the window: no verdict                  10
=========================  =====================================================  ================

With the defaults, a run logged for 1,000 steps whose entropy starts at 1.2 is flagged when its
5-point mean falls below 0.12 before step 200. Reading: one query on MetricSeries for the runs'
entropy keys, one for the positions of the window's chunks, one for their points; a window longer
than ``MAX_WINDOW_CHUNKS`` chunks (4,096 points each) is sampled evenly, chunk by chunk. Verdicts are
cached per (series, point count, last step, rule) in Django's cache.

The same rule is a health rule too (webapp.alerts, issue 15): the "entropy collapse" preset creates a
rule of kind ``collapse`` on the ``@entropy`` alias whose parameters default to these settings, and
evaluates it with ``verdicts`` on each stored batch of an entropy key; the first flag is an event on
the run (with its step on the charts). The runs table and the compare page keep reading the flag
from here, with the settings, whether or not a project applied the preset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache

from webapp.runs.models import MetricChunk, MetricSeries

DEFAULT_KEYS = ("policy/entropy", "actor/entropy", "entropy")
MAX_WINDOW_CHUNKS = 16
CACHE_SECONDS = 3600


@dataclass(frozen=True)
class Rule:
    keys: tuple[str, ...] = DEFAULT_KEYS
    ratio: float = 0.1
    window: float = 0.2
    floor: float = 0.05
    smooth: int = 5
    min_points: int = 10

    @classmethod
    def from_settings(cls) -> Rule:
        return cls(
            keys=tuple(getattr(settings, "ORLAB_ENTROPY_KEYS", DEFAULT_KEYS)),
            ratio=float(getattr(settings, "ORLAB_COLLAPSE_RATIO", 0.1)),
            window=float(getattr(settings, "ORLAB_COLLAPSE_WINDOW", 0.2)),
            floor=float(getattr(settings, "ORLAB_COLLAPSE_FLOOR", 0.05)),
            smooth=max(1, int(getattr(settings, "ORLAB_COLLAPSE_SMOOTH", 5))),
            min_points=max(1, int(getattr(settings, "ORLAB_COLLAPSE_MIN_POINTS", 10))),
        )

    def window_end(self, first_step: int, last_step: int) -> float:
        if self.window <= 1:
            return first_step + self.window * (last_step - first_step)
        return first_step + self.window

    def describe(self) -> str:
        window = (
            f"the first {self.window:.0%} of its steps"
            if self.window <= 1
            else f"its first {self.window:g} steps"
        )
        return (
            f"entropy ({' / '.join(self.keys)}) falls below max({self.ratio:g} x its initial value, "
            f"{self.floor:g}) within {window} ({self.smooth}-point mean)"
        )


@dataclass
class Verdict:
    flagged: bool
    key: str
    initial: float | None = None
    threshold: float | None = None
    window_end: float | None = None
    step: int | None = None  # where the smoothed entropy first fell below the threshold
    value: float | None = None  # the smoothed entropy there
    reason: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    @property
    def message(self) -> str:
        if not self.flagged:
            return self.reason
        return (
            f"entropy collapse: {self.key} fell from {self.initial:.3g} to {self.value:.3g} "
            f"(below {self.threshold:.3g}) by step {self.step}"
        )


def evaluate(
    key: str, steps: np.ndarray, values: np.ndarray, rule: Rule, *, first_step=None, last_step=None
) -> Verdict:
    """The rule on one entropy series (step-sorted). ``first_step``/``last_step`` default to the
    series' own (pass them when ``steps`` holds only the early part of the series)."""
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if not len(steps):
        return Verdict(False, key, reason="no finite entropy values")
    first = int(steps[0]) if first_step is None else int(first_step)
    last = int(steps[-1]) if last_step is None else int(last_step)
    end = rule.window_end(first, last)
    inside = steps <= end
    steps, values = steps[inside], values[inside]
    if len(values) < rule.min_points:
        return Verdict(
            False, key, window_end=end, reason=f"fewer than {rule.min_points} points in the early window"
        )
    k = min(rule.smooth, len(values))
    initial = float(values[:k].mean())
    threshold = max(rule.ratio * initial, rule.floor)
    if initial <= threshold:
        return Verdict(
            False, key, initial=initial, threshold=threshold, window_end=end,
            reason="the initial entropy is already at or below the threshold",
        )  # fmt: skip
    if k > 1:
        csum = np.cumsum(np.r_[0.0, values])
        smoothed = (csum[k:] - csum[:-k]) / k  # trailing mean ending at index k-1 ...
        at = np.arange(k - 1, len(values))
    else:
        smoothed, at = values, np.arange(len(values))
    below = np.flatnonzero(smoothed < threshold)
    if not below.size:
        return Verdict(False, key, initial=initial, threshold=threshold, window_end=end, reason="no collapse")
    i = below[0]
    return Verdict(
        True, key, initial=initial, threshold=threshold, window_end=end,
        step=int(steps[at[i]]), value=float(smoothed[i]),
    )  # fmt: skip


def _cache_key(series_id: int, count: int, last_step, rule: Rule) -> str:
    digest = hashlib.sha1(repr(rule).encode()).hexdigest()[:12]
    return f"orlab:collapse:{series_id}:{count}:{last_step}:{digest}"


def verdicts(
    run_ids: Iterable[int], rule: Rule | None = None, series: Iterable[tuple] | None = None
) -> dict[int, Verdict]:
    """{run id: Verdict} for the runs that logged one of the rule's entropy keys. ``series``: rows
    of webapp.runs.table.series_rows already fetched for these runs (with the entropy keys)."""
    from webapp.runs.metric_store import FLOAT, STEP, decode, fetch_rows

    rule = rule or Rule.from_settings()
    run_ids = list(run_ids)
    if not run_ids or not rule.keys:
        return {}
    if series is None:
        rows = MetricSeries.objects.filter(run_id__in=run_ids, key__in=rule.keys, count__gt=0).values_list(
            "id", "run_id", "key", "count", "last_step"
        )
    else:  # table.SERIES_FIELDS: id, run_id, key, last_step, last_value, min, max, count
        wanted, keys = set(run_ids), set(rule.keys)
        rows = [(r[0], r[1], r[2], r[7], r[3]) for r in series if r[1] in wanted and r[2] in keys and r[7]]
    priority = {k: i for i, k in enumerate(rule.keys)}
    chosen: dict[int, tuple] = {}
    for row in rows:
        if row[1] not in chosen or priority[row[2]] < priority[chosen[row[1]][2]]:
            chosen[row[1]] = row
    out: dict[int, Verdict] = {}
    keys = {run_id: _cache_key(sid, count, last, rule) for run_id, (sid, _, _, count, last) in chosen.items()}
    cached = cache.get_many(list(keys.values())) if keys else {}
    todo = {}
    for run_id, row in chosen.items():
        hit = cached.get(keys[run_id])
        if hit is not None:
            out[run_id] = Verdict(**hit)
        else:
            todo[row[0]] = row
    if not todo:
        return out

    # Where the chunks of each series lie (no payload): choose those of the early window.
    positions: dict[int, list[tuple[int, int, int]]] = {}
    for cid, sid, lo, hi in (
        MetricChunk.objects.filter(series_id__in=list(todo)).order_by("series_id", "step_lo", "id")
        .values_list("id", "series_id", "step_lo", "step_hi")
    ):  # fmt: skip
        positions.setdefault(sid, []).append((cid, lo, hi))
    wanted: list[int] = []
    bounds: dict[int, tuple[int, int]] = {}
    for sid, chunks in positions.items():
        first = min(lo for _, lo, _ in chunks)
        last = todo[sid][4] if todo[sid][4] is not None else max(hi for _, _, hi in chunks)
        bounds[sid] = (first, last)
        end = rule.window_end(first, last)
        inside = [cid for cid, lo, _ in chunks if lo <= end]
        if len(inside) > MAX_WINDOW_CHUNKS:
            picks = np.unique(np.linspace(0, len(inside) - 1, MAX_WINDOW_CHUNKS).round().astype(int))
            inside = [inside[i] for i in picks]
        wanted.extend(inside)
    parts: dict[int, list] = {}
    if wanted:
        qs = MetricChunk.objects.filter(id__in=wanted).values_list("series_id", "steps", "values")
        for sid, steps, values in fetch_rows(qs):
            parts.setdefault(sid, []).append((decode(steps, STEP), decode(values, FLOAT)))
    to_cache = {}
    for sid, (_, run_id, key, _, _) in todo.items():
        chunks = parts.get(sid)
        if not chunks:
            continue
        steps = np.concatenate([c[0] for c in chunks])
        values = np.concatenate([c[1] for c in chunks])
        order = np.argsort(steps, kind="stable")
        first, last_step = bounds[sid]
        verdict = evaluate(key, steps[order], values[order], rule, first_step=first, last_step=last_step)
        out[run_id] = verdict
        to_cache[keys[run_id]] = asdict(verdict)
    if to_cache:
        cache.set_many(to_cache, CACHE_SECONDS)
    return out
