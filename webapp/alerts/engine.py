"""Evaluating rules on a stored batch (called from webapp.alerts.ingest.points_written).

Cost model: per batch, one lookup of the run (project, kind, group, tags) and of its project's
rules version, cached in this process for ORLAB_ALERT_RULES_TTL seconds (default 2): a project
with no rules costs that and nothing else. With rules, only the rules whose key (or alias) names a
batch key run, each vectorised over the batch's points with numpy. On PostgreSQL their states live
in this process (webapp.alerts.state_cache: read with the run's own row, written behind for all
runs in one statement about every second, z-score moments merged exactly across processes); a
batch that fires writes its events in one INSERT at once, which also asks whether anyone listens
(notifications are queued only then)."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from webapp.alerts import presets
from webapp.alerts.models import Event, Mute, Rule, RuleState, RulesVersion, RunPulse

MAX_EVENTS_PER_SERIES = 5  # episodes fired for one (rule, run, key) in one batch, at most
PULSE_EVERY_S = 2.0  # a process writes a run's RunPulse at most this often


@dataclass(frozen=True)
class Compiled:
    id: int
    name: str
    kind: str
    params: dict
    severity: str
    run_kind: str
    run_group: str
    run_tag: str
    run_id: int | None
    sources: tuple  # literal keys, or tuples of keys to sum

    def applies_to(self, run: RunInfo) -> bool:
        return (
            (self.run_id is None or self.run_id == run.id)
            and (not self.run_kind or self.run_kind == run.kind)
            and (not self.run_group or self.run_group == run.group)
            and (not self.run_tag or self.run_tag in run.tags)
        )


@dataclass
class RunInfo:
    id: int
    project_id: int
    kind: str
    group: str
    tags: tuple
    version: int
    checked: float


@dataclass
class ProjectRules:
    version: int
    rules: list[Compiled]
    # rules of every run (filtered on kind/group/tag when applied), by metric key ...
    by_key: dict[str, list[tuple[Compiled, str | tuple]]] = field(default_factory=dict)
    # ... and one-run rules by (run, key): 10,000 one-run rules cost a batch only its own run's
    by_run_key: dict[tuple[int, str], list[tuple[Compiled, str | tuple]]] = field(default_factory=dict)
    has_stalled: bool = False
    # rule id -> [(run id or None for every run, until or None)]: checked only when a rule fires
    mutes: dict[int, list] = field(default_factory=dict)

    def muted(self, rule_id: int, run_id: int, now) -> bool:
        return any(
            (run is None or run == run_id) and (until is None or until > now)
            for run, until in self.mutes.get(rule_id, ())
        )

    def for_key(self, run_id: int, key: str) -> list[tuple[Compiled, str | tuple]]:
        general = self.by_key.get(key)
        own = self.by_run_key.get((run_id, key))
        if own is None:
            return general or []
        return own if general is None else general + own


@dataclass
class State:
    """A RuleState row in memory (a dataclass, not a model: a batch handles a few of them and a
    Django model's __init__ cost more than the rule evaluation itself)."""

    rule_id: int
    run_id: int
    key: str
    active: bool = False
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    buffer: list = field(default_factory=list)
    pk: int | None = None
    # written behind (webapp.alerts.state_cache): the moments of the points added since the last
    # flush, merged into the row there, and when this process last saw the row
    dn: int = 0
    dmean: float = 0.0
    dm2: float = 0.0
    synced: float = 0.0


_lock = threading.Lock()
_runs: dict[int, RunInfo] = {}
_projects: dict[int, ProjectRules] = {}
_pulses: dict[int, float] = {}


def _ttl() -> float:
    return float(getattr(settings, "ORLAB_ALERT_RULES_TTL", 2.0))


def forget(project_id: int | None = None) -> None:
    """Drop this process's cached rules (a rule changed here; other processes see the version)."""
    global _versions_at
    from webapp.alerts import state_cache

    state_cache.forget()
    with _lock:
        _versions_at = -1e9
        if project_id is None:
            _projects.clear()
            _runs.clear()
        else:
            _projects.pop(project_id, None)
            for rid in [r for r, info in _runs.items() if info.project_id == project_id]:
                _runs.pop(rid, None)


def _versions() -> dict[int, int]:
    """{project id: rules version} of every project that ever had rules: one query a process every
    ORLAB_ALERT_RULES_TTL seconds (a row a project, only projects with rules), not one a batch."""
    global _versions_at, _versions_map
    now = time.monotonic()
    if now - _versions_at >= _ttl():
        _versions_map = dict(RulesVersion.objects.values_list("project_id", "version"))
        _versions_at = now
    return _versions_map


_versions_at = -1e9
_versions_map: dict[int, int] = {}


def _run_info(run_id: int) -> RunInfo | None:
    """The run's project, kind, group and tags, cached ORLAB_ALERT_RUN_TTL seconds (default 30: a
    changed group or tag reaches the rules' filters that late; project and kind never change)."""
    now = time.monotonic()
    info = _runs.get(run_id)
    if info is None or now - info.checked >= float(getattr(settings, "ORLAB_ALERT_RUN_TTL", 30.0)):
        from webapp.runs.models import Run

        if connection.vendor == "postgresql" and _versions():
            row = _run_row_with_states(run_id)
        else:
            row = Run.objects.filter(pk=run_id).values_list("project_id", "kind", "group", "tags").first()
        if row is None:
            return None
        tags = tuple(t for t in (row[3] or []) if isinstance(t, str))
        info = RunInfo(run_id, row[0], row[1], row[2], tags, 0, now)
        with _lock:
            if len(_runs) > 100_000:
                _runs.clear()
            _runs[run_id] = info
    info.version = _versions().get(info.project_id, 0)
    return info


def _run_row_with_states(run_id: int):
    """The run's (project, kind, group, tags) and, in the same round trip, all its rule states,
    handed to state_cache: a run this process has not seen lately (its info expired) costs the
    rules ONE query, not a run query plus a states query (issue 15a)."""
    from webapp.alerts import state_cache
    from webapp.runs.metric_store import fetch_sql
    from webapp.runs.models import Run

    rows = fetch_sql(
        f'SELECT project_id, kind, "group", tags, (SELECT coalesce(json_agg(json_build_array('
        "rule_id, key, active, n, mean, m2, buffer)), '[]'::json) "
        f'FROM "{RuleState._meta.db_table}" WHERE run_id = r.id) '
        f'FROM "{Run._meta.db_table}" r WHERE r.id = %s',
        [run_id],
    )
    if not rows:
        return None
    project_id, kind, group, tags, states = rows[0]
    if isinstance(tags, str):
        tags = json.loads(tags)
    if isinstance(states, str):
        states = json.loads(states)
    state_cache.prime(run_id, states, State)
    return project_id, kind, group, tags


def _compile(rule: Rule) -> Compiled:
    sources = presets.alias_sources(rule.key)
    return Compiled(
        rule.id, rule.name, rule.kind, dict(rule.params or {}), rule.severity,
        rule.run_kind, rule.run_group, rule.run_tag, rule.run_id,
        tuple(sources) if sources is not None else ((rule.key,) if rule.key else ()),
    )  # fmt: skip


COMPILED_FIELDS = (
    "id",
    "name",
    "kind",
    "params",
    "severity",
    "run_kind",
    "run_group",
    "run_tag",
    "run_id",
    "key",
)


def _compile_row(pk, name, kind, params, severity, run_kind, run_group, run_tag, run_id, key) -> Compiled:
    sources = presets.alias_sources(key)
    return Compiled(
        pk, name, kind, params or {}, severity, run_kind, run_group, run_tag, run_id,
        tuple(sources) if sources is not None else ((key,) if key else ()),
    )  # fmt: skip


def project_rules(project_id: int, version: int) -> ProjectRules:
    cached = _projects.get(project_id)
    if cached is not None and cached.version == version:
        return cached
    # rows, not model instances: a project with 10,000 rules compiles in each process after a change
    rows = Rule.objects.filter(project_id=project_id, enabled=True).values_list(*COMPILED_FIELDS)
    rules = [_compile_row(*row) for row in rows]
    compiled = ProjectRules(version, rules)
    for rule_id, run_id, until in Mute.objects.filter(rule__project_id=project_id).values_list(
        "rule_id", "run_id", "until"
    ):
        compiled.mutes.setdefault(rule_id, []).append((run_id, until))
    for rule in rules:
        if rule.kind == Rule.Kind.STALLED:
            compiled.has_stalled = True
            continue
        for source in rule.sources:
            for key in source if isinstance(source, tuple) else (source,):
                if rule.run_id is None:
                    compiled.by_key.setdefault(key, []).append((rule, source))
                else:
                    compiled.by_run_key.setdefault((rule.run_id, key), []).append((rule, source))
    with _lock:
        _projects[project_id] = compiled
    return compiled


# --- conditions, vectorised ---------------------------------------------------------------------


def _compare(values: np.ndarray, op: str, bound) -> np.ndarray:
    """``values op bound`` (one comparison: a dict of all four computed each of them every call)."""
    with np.errstate(invalid="ignore"):
        if op == ">":
            return values > bound
        if op == ">=":
            return values >= bound
        if op == "<":
            return values < bound
        return values <= bound


def _directional(score: np.ndarray, bound: float, direction: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if direction == "up":
            return score >= bound
        if direction == "down":
            return score <= -bound
        return np.abs(score) >= bound


def _zscore(rule: Compiled, values: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray]:
    """One rule's z-scores: the stacked pass with one row (``_apply`` stacks every z-score rule)."""
    cond, z = _zscore_stacked([rule], values[None, :], [state])
    return cond[0], z[0]


def _zscore_stacked(rules: list[Compiled], values: np.ndarray, states: list[State]):
    """z of each point against its run's history before it, for R rules at once (``values`` is R x L,
    row i the points of rules[i]'s series): Welford's count/mean/M2 carried in each state, prefix sums
    along the rows, so a run's ten z-score rules cost one pass of numpy calls, not ten (issue 15a:
    per-call overhead, not arithmetic, was the cost). Non-finite points neither score nor count.
    Returns (condition, z), both R x L, and carries each state's totals forward."""
    finite = np.isfinite(values)
    n0 = np.array([s.n for s in states], dtype=np.float64)[:, None]
    mean0 = np.array([s.mean for s in states], dtype=np.float64)[:, None]
    m2_0 = np.array([s.m2 for s in states], dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(finite, values - mean0, 0.0)
        d2 = d * d
        cum_d, cum_d2 = np.cumsum(d, axis=1), np.cumsum(d2, axis=1)
        counts = n0 + np.cumsum(finite, axis=1) - finite  # points before each one
        sum_d = cum_d - d
        before = np.maximum(counts, 1)
        ratio = sum_d / before  # 0 where nothing came before (sum_d is 0 there)
        mean = mean0 + ratio
        m2 = m2_0 + cum_d2 - d2 - sum_d * ratio
        std = np.sqrt(np.maximum(m2, 0.0) / np.maximum(counts - 1, 1))
        dev = values - mean
        z = np.where(std > 0, dev / std, np.where(dev != 0, np.inf * np.sign(dev), 0.0))
    min_points = np.array([r.params["min_points"] for r in rules], dtype=np.float64)[:, None]
    z = np.where(finite & (counts >= min_points), z, np.nan)
    bound = np.array([r.params["z"] for r in rules], dtype=np.float64)[:, None]
    directions = [r.params["direction"] for r in rules]
    with np.errstate(invalid="ignore"):
        if all(x == directions[0] for x in directions):
            cond = _directional(z, bound, directions[0])
        else:
            cond = np.stack([_directional(z[i], bound[i, 0], x) for i, x in enumerate(directions)])
    # carry the totals forward
    totals = finite.sum(axis=1)
    sds, sd2s = cum_d[:, -1], cum_d2[:, -1]
    from webapp.alerts.state_cache import combine

    for i, state in enumerate(states):
        total = int(totals[i])
        if not total:
            continue
        sd, sd2 = float(sds[i]), float(sd2s[i])
        n1 = state.n + total
        mean_0, m2_before = state.mean, state.m2
        state.m2 = m2_before + sd2 - sd * sd / n1
        state.mean, state.n = mean_0 + sd / n1, n1
        # this batch's own moments join the unflushed delta (state_cache merges it into the row)
        state.dn, state.dmean, state.dm2 = combine(
            state.dn, state.dmean, state.dm2, total, mean_0 + sd / total, sd2 - sd * sd / total
        )
    return cond, z


def _change(rule: Compiled, values: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray]:
    window = rule.params["window"]
    history = np.asarray(state.buffer or [], dtype=np.float64)
    joined = np.concatenate([history, values])
    start = len(history)
    idx = np.arange(start, len(joined)) - window
    before = np.where(idx >= 0, joined[np.maximum(idx, 0)], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = values - before
        if rule.params["relative"]:
            delta = delta / np.abs(before)
    cond = _directional(delta, rule.params["amount"], rule.params["direction"])
    state.buffer = joined[-window:].tolist()  # NaN stored as null (_save_states)
    return cond, delta


def _collapse(rule: Compiled, key: str, run_id: int, state: State) -> tuple[int, float, str] | None:
    """Entropy collapse: webapp.runs.collapse's verdict on the stored series (its early window needs
    the run's first points, not the batch's), with the rule's parameters; fires when it first flags."""
    from webapp.runs import collapse

    p = rule.params
    crule = collapse.Rule(
        keys=(key,), ratio=p["ratio"], window=p["window"], floor=p["floor"], smooth=p["smooth"],
        min_points=p["min_points"],
    )  # fmt: skip
    verdict = collapse.verdicts([run_id], crule).get(run_id)
    if verdict is None or not verdict.flagged:
        return None
    return verdict.step, verdict.value, verdict.message


def _describe(rule: Compiled, key: str, value: float, score: float | None) -> str:
    p = rule.params
    if rule.kind == "threshold":
        return f"{key} = {value:.4g} {p['op']} {p['value']:g}"
    if rule.kind == "zscore":
        return f"{key} = {value:.4g}, z = {score:+.1f} against the run's history (|z| >= {p['z']:g})"
    if rule.kind == "change":
        what = "relative change" if p["relative"] else "change"
        return f"{key} = {value:.4g}: {what} {score:+.4g} over {p['window']} points (>= {p['amount']:g})"
    if rule.kind == "nan_inf":
        return f"{key} = {value} (not finite)"
    return f"{key} = {value:.4g}"


def _source_points(source, batch) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(event key, steps, values) of a literal key or a sum of keys (summed at the steps all parts
    share in this batch: trainers log the parts of one step together)."""
    if isinstance(source, str):
        cols = batch.get(source)
        if cols is None:
            return None
        return source, cols.steps, cols.values
    parts = [batch.get(k) for k in source]
    if any(p is None for p in parts):
        return None
    steps = parts[0].steps
    for p in parts[1:]:
        steps = np.intersect1d(steps, p.steps)
    if not len(steps):
        return None
    total = np.zeros(len(steps))
    for p in parts:
        order = np.argsort(p.steps, kind="stable")
        at = order[np.searchsorted(p.steps[order], steps)]
        total = total + p.values[at]
    return presets.sum_key(source), steps, total


def _episode_starts(cond: np.ndarray, was_active: bool) -> tuple[np.ndarray, bool]:
    """Indices where the condition turns true (the first point counts when no episode is open),
    and whether an episode is open after the batch."""
    cond = np.asarray(cond, dtype=bool)
    if not len(cond):
        return np.empty(0, dtype=np.int64), was_active
    previous = np.empty_like(cond)  # the condition one point earlier (np.r_ cost ~40 us a call)
    previous[0] = was_active
    previous[1:] = cond[:-1]
    return np.flatnonzero(cond & ~previous), bool(cond[-1])


def _episode_starts_stacked(cond: np.ndarray, was_active: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """_episode_starts for R rows at once: each row's start indices, and each row's open episode."""
    previous = np.empty_like(cond)
    previous[:, 0] = was_active
    previous[:, 1:] = cond[:, :-1]
    rows, cols = np.nonzero(cond & ~previous)
    starts = np.split(cols, np.searchsorted(rows, np.arange(1, len(cond))))
    return starts, cond[:, -1]


def evaluate(run_id: int, batch) -> list[Event]:
    """Fire the rules of ``run_id``'s project on ``batch`` (key -> metric_store.Columns, already
    committed). Returns the events written."""
    if not _versions():
        return []  # no project has ever had a rule: not even the run's row is read
    info = _run_info(run_id)
    if info is None or not info.version:
        return []
    compiled = project_rules(info.project_id, info.version)
    if compiled.has_stalled:
        _touch_pulse(run_id)
    if not compiled.by_key and not compiled.by_run_key:
        return []
    work: dict[tuple[int, str], tuple[Compiled, str, np.ndarray, np.ndarray]] = {}
    for key in batch:
        for rule, source in compiled.for_key(run_id, key):
            if not rule.applies_to(info):
                continue
            points = _source_points(source, batch)
            if points is None or not len(points[2]):
                continue  # no points of this key in the batch: nothing to evaluate
            ekey, steps, values = points
            if (rule.id, ekey) not in work:
                order = np.argsort(steps, kind="stable")
                work[(rule.id, ekey)] = (rule, ekey, np.asarray(steps)[order], np.asarray(values)[order])
    if not work:
        return []
    behind = connection.vendor == "postgresql"  # states written behind (state_cache), else per batch
    if behind:
        from webapp.alerts import state_cache

        states = state_cache.checkout(run_id, list(work), State)
        with state_cache._lock:  # two threads of this process on one run: one batch at a time
            changed, fired = _apply(run_id, info, work, states)
        state_cache.mark_dirty(changed)
    else:
        states = _load_states(run_id, list({r for r, _ in work}))
        changed, fired = _apply(run_id, info, work, states)
    if fired:
        from django.utils import timezone

        now = timezone.now()
        fired = [e for e in fired if not compiled.muted(e.rule_id, run_id, now)]
    if behind:
        if fired:
            _write_postgresql([], fired)
        state_cache.maybe_flush()
    else:
        _save_states(changed)
        if fired:
            fired = _write_events(fired, run_id)
    return fired


STACKED_KINDS = ("threshold", "zscore")


def _apply(run_id: int, info: RunInfo, work: dict, states: dict) -> tuple[list[State], list[Event]]:
    """Run each rule on its points, updating its state; returns (changed states, events).

    Threshold and z-score rules with as many points (a run's keys logged together) are evaluated
    stacked, one numpy pass for all of them; the other kinds one rule at a time."""
    changed: list[State] = []
    fired: list[Event] = []
    stacks: dict[tuple[str, int], list] = {}
    for (rule_id, ekey), (rule, _, steps, values) in work.items():
        state = states.get((rule_id, ekey)) or State(rule_id, run_id, ekey)
        if rule.kind in STACKED_KINDS:
            stacks.setdefault((rule.kind, len(values)), []).append((rule, ekey, steps, values, state))
            continue
        before = _snapshot(state)
        score = None
        if rule.kind == "collapse":
            if state.active:
                continue  # a run's collapse is one episode: the verdict never un-flags
            verdict = _collapse(rule, ekey, run_id, state)
            if verdict is not None:
                state.active = True
                step, value, message = verdict
                fired.append(_event(rule, info, ekey, step, value, message))
        else:
            if rule.kind == "nan_inf":
                cond = ~np.isfinite(values)
            else:
                cond, score = _change(rule, values, state)
            starts, state.active = _episode_starts(cond, state.active)
            _fire(rule, info, ekey, steps, values, score, starts, fired)
        _note_change(state, before, changed)
    for (kind, _), items in stacks.items():
        rules = [it[0] for it in items]
        item_states = [it[4] for it in items]
        befores = [_snapshot(st) for st in item_states]
        values = np.stack([it[3] for it in items])
        if kind == "zscore":
            cond, score = _zscore_stacked(rules, values, item_states)
        else:
            cond, score = _threshold_stacked(rules, values), None
        starts, active = _episode_starts_stacked(cond, np.array([st.active for st in item_states]))
        for i, (rule, ekey, steps, row_values, state) in enumerate(items):
            state.active = bool(active[i])
            if len(starts[i]):
                _fire(
                    rule, info, ekey, steps, row_values, None if score is None else score[i], starts[i], fired
                )
            _note_change(state, befores[i], changed)
    return changed, fired


def _threshold_stacked(rules: list[Compiled], values: np.ndarray) -> np.ndarray:
    """Threshold rules, R at once (R x L values): one comparison per operator present."""
    ops = [r.params["op"] for r in rules]
    bound = np.array([r.params["value"] for r in rules], dtype=np.float64)[:, None]
    if all(op == ops[0] for op in ops):
        return _compare(values, ops[0], bound)
    return np.stack([_compare(values[i], op, bound[i, 0]) for i, op in enumerate(ops)])


def _snapshot(state: State) -> tuple:
    return (state.active, state.n, state.mean, state.m2, list(state.buffer or []))


def _note_change(state: State, before: tuple, changed: list[State]) -> None:
    after = _snapshot(state)
    # a state with no row that is still the default (a threshold rule whose episode never
    # opened) is what a missing row reads as: no write (half of a batch's states, typically)
    if (state.pk is None and after != DEFAULT_STATE) or (state.pk is not None and before != after):
        changed.append(state)


def _fire(rule: Compiled, info: RunInfo, ekey: str, steps, values, score, starts, fired: list[Event]) -> None:
    for i in starts[:MAX_EVENTS_PER_SERIES]:
        value = float(values[i])
        s = float(score[i]) if score is not None else None
        fired.append(_event(rule, info, ekey, int(steps[i]), value, _describe(rule, ekey, value, s)))


DEFAULT_STATE = (False, 0, 0.0, 0.0, [])


def _write_postgresql(states: list[State], events: list[Event]) -> None:
    """A batch's state upsert and event insert in ONE statement (a CTE), which also says whether
    the events' project has an enabled channel: a firing batch costs one round trip, not three
    (upsert, insert, channel query); notified after the statement commits, only if someone listens."""
    from django.utils import timezone

    parts, params = [], []
    if states:
        for st in states:  # JSON has no NaN: a gap in a change window is null
            st.buffer = [
                None if isinstance(x, float) and not math.isfinite(x) else x for x in (st.buffer or [])
            ]
        parts.append(
            f'st AS (INSERT INTO "{RuleState._meta.db_table}" (rule_id, run_id, key, active, n, mean, m2, buffer) '
            "SELECT r, u, k, a, n, m, q, b::jsonb FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
            "%s::boolean[], %s::bigint[], %s::float8[], %s::float8[], %s::text[]) AS t(r, u, k, a, n, m, q, b) "
            "ON CONFLICT (run_id, rule_id, key) DO UPDATE SET active = EXCLUDED.active, n = EXCLUDED.n, "
            "mean = EXCLUDED.mean, m2 = EXCLUDED.m2, buffer = EXCLUDED.buffer)"
        )
        params += [
            [st.rule_id for st in states], [st.run_id for st in states], [st.key for st in states],
            [st.active for st in states], [st.n for st in states], [st.mean for st in states],
            [st.m2 for st in states], [json.dumps(st.buffer) for st in states],
        ]  # fmt: skip
    now = timezone.now()
    if events:
        from webapp.notify.models import Channel

        columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        arrays = ", ".join(f"%s::{t}[]" for t in EVENT_TYPES)
        parts.append(
            f'ev AS (INSERT INTO "{Event._meta.db_table}" ({columns}, created_at) '
            f"SELECT *, %s FROM unnest({arrays}) RETURNING id)"
        )
        params += [now, *([getattr(e, c) for e in events] for c in EVENT_COLUMNS)]
        tail = (
            f'SELECT id, EXISTS (SELECT 1 FROM "{Channel._meta.db_table}" '
            "WHERE project_id = %s AND enabled) FROM ev"
        )
        params.append(events[0].project_id)  # one batch, one run, one project
    else:
        tail = "SELECT NULL, FALSE"
    from webapp.runs.metric_store import raw_cursor  # server-side binding: Django quoted the arrays

    with raw_cursor() as cur:
        cur.execute(f"WITH {', '.join(parts)} {tail}", params)
        rows = cur.fetchall()
    if not events:
        return
    # RETURNING's order is the VALUES' order for an INSERT ... SELECT FROM unnest (as
    # _insert_events_postgresql relies on too)
    for event, (pk, _) in zip(events, rows, strict=True):
        event.pk, event.created_at = pk, now
    if rows[0][1]:
        transaction.on_commit(lambda: _notify(events))


def _event(rule: Compiled, info: RunInfo, key: str, step, value, message: str) -> Event:
    value = value if value is None or math.isfinite(value) else None
    return Event(
        rule_id=rule.id, rule_name=rule.name, run_id=info.id, project_id=info.project_id, key=key,
        step=step, value=value, message=f"{rule.name}: {message}"[:4000], severity=rule.severity,
    )  # fmt: skip


def _load_states(run_id: int, rule_ids: list[int]) -> dict[tuple[int, str], State]:
    """The states of these rules on this run (one query; without the ORM's compiling on PostgreSQL:
    it runs once a batch)."""
    if connection.vendor != "postgresql":
        rows = RuleState.objects.filter(run_id=run_id, rule_id__in=rule_ids).values_list(
            "id", "rule_id", "key", "active", "n", "mean", "m2", "buffer"
        )
    else:
        from webapp.runs.metric_store import fetch_sql

        rows = fetch_sql(
            f'SELECT id, rule_id, key, active, n, mean, m2, buffer FROM "{RuleState._meta.db_table}" '
            "WHERE run_id = %s AND rule_id = ANY(%s)",
            [run_id, rule_ids],
        )
    out = {}
    for pk, rule_id, key, active, n, mean, m2, buffer in rows:
        if isinstance(buffer, str):
            buffer = json.loads(buffer)
        out[(rule_id, key)] = State(rule_id, run_id, key, active, n, mean, m2, buffer or [], pk)
    return out


def _save_states(states: list[State]) -> None:
    if not states:
        return
    for s in states:  # JSON has no NaN: a gap in a change window is null
        s.buffer = [None if isinstance(x, float) and not math.isfinite(x) else x for x in (s.buffer or [])]
    if connection.vendor == "postgresql":  # one statement from arrays, as metric_store writes
        with connection.cursor() as cur:
            cur.execute(
                f'INSERT INTO "{RuleState._meta.db_table}" (rule_id, run_id, key, active, n, mean, m2, buffer) '
                "SELECT r, u, k, a, n, m, q, b::jsonb FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
                "%s::boolean[], %s::bigint[], %s::float8[], %s::float8[], %s::text[]) AS t(r, u, k, a, n, m, q, b) "
                "ON CONFLICT (run_id, rule_id, key) DO UPDATE SET active = EXCLUDED.active, n = EXCLUDED.n, "
                "mean = EXCLUDED.mean, m2 = EXCLUDED.m2, buffer = EXCLUDED.buffer",
                [
                    [s.rule_id for s in states], [s.run_id for s in states], [s.key for s in states],
                    [s.active for s in states], [s.n for s in states], [s.mean for s in states],
                    [s.m2 for s in states], [json.dumps(s.buffer) for s in states],
                ],
            )  # fmt: skip
        return
    RuleState.objects.bulk_create(
        [
            RuleState(
                rule_id=s.rule_id,
                run_id=s.run_id,
                key=s.key,
                active=s.active,
                n=s.n,
                mean=s.mean,
                m2=s.m2,
                buffer=s.buffer,
            )  # fmt: skip
            for s in states
        ],
        update_conflicts=True,
        unique_fields=["run", "rule", "key"],
        update_fields=["active", "n", "mean", "m2", "buffer"],
    )


def _write_events(events: list[Event], run_id: int, compiled: ProjectRules | None = None) -> list[Event]:
    """Insert the events of rules not muted for this run; notify after they commit."""
    from django.utils import timezone

    now = timezone.now()
    if compiled is not None:
        events = [e for e in events if not compiled.muted(e.rule_id, run_id, now)]
    else:
        from webapp.alerts.services import active_mutes

        muted = active_mutes({e.rule_id for e in events}, run_id)
        events = [e for e in events if e.rule_id not in muted]
    if not events:
        return []
    # one statement (atomic by itself: no BEGIN/COMMIT round trips in autocommit); notified once it
    # committed (at once in autocommit, at the end of a caller's transaction otherwise)
    if connection.vendor == "postgresql":
        _insert_events_postgresql(events, now)
    else:
        Event.objects.bulk_create(events)
    transaction.on_commit(lambda: _notify(events))
    return events


EVENT_COLUMNS = (
    "rule_id",
    "rule_name",
    "run_id",
    "project_id",
    "key",
    "step",
    "value",
    "message",
    "severity",
)
EVENT_TYPES = ("bigint", "text", "bigint", "bigint", "text", "bigint", "float8", "text", "text")


def _insert_events_postgresql(events: list[Event], now) -> None:
    """One INSERT from arrays, ids returned (the notifier gets saved rows): the ORM's bulk_create
    costs more CPU than the rule evaluation itself on a batch that fires."""
    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    arrays = ", ".join(f"%s::{t}[]" for t in EVENT_TYPES)
    with connection.cursor() as cur:
        cur.execute(
            f'INSERT INTO "{Event._meta.db_table}" ({columns}, created_at) '
            f"SELECT *, %s FROM unnest({arrays}) RETURNING id",
            [now, *([getattr(e, c) for e in events] for c in EVENT_COLUMNS)],
        )
        ids = [row[0] for row in cur.fetchall()]
    for event, pk in zip(events, ids, strict=True):
        event.pk, event.created_at = pk, now


def _notify(events: list[Event]) -> None:
    from webapp.notify import dispatch

    try:  # one channel query for the batch's events, not four queries an event (dispatch.events_fired)
        dispatch.events_fired(events)
    except Exception:  # a notifier's failure must not fail the ingest request
        import logging

        logging.getLogger(__name__).exception("notifying events %s failed", [e.pk for e in events])


def _touch_pulse(run_id: int) -> None:
    now = time.monotonic()
    if now - _pulses.get(run_id, -1e9) < PULSE_EVERY_S:
        return
    _pulses[run_id] = now
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(
                f'INSERT INTO "{RunPulse._meta.db_table}" (run_id, last_point_at) VALUES (%s, now()) '
                "ON CONFLICT (run_id) DO UPDATE SET last_point_at = EXCLUDED.last_point_at",
                [run_id],
            )
    else:
        from django.utils import timezone

        RunPulse.objects.update_or_create(run_id=run_id, defaults={"last_point_at": timezone.now()})
