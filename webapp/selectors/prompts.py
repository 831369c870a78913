"""Rollout analytics over training (issue 14 points 5, 6 and 8): the prompt x step solve matrix, one
prompt's history, and the per-step distributions. One reading for the pages (``/runs/<id>/prompts/``,
``/runs/<id>/prompts/<prompt id>/``, ``/runs/<id>/distributions/``) and the API (``/api/runs/<id>/prompts/``,
``.../prompts/<prompt id>/``, ``.../prompts/matrix.csv``, ``.../distributions/``).

Sources
    The matrix, the counts over time, the zero-variance share, a prompt's history and the truncation rate
    read ``PromptStepStat`` only: the per-(run, prompt, step, phase) aggregates that retention never
    deletes, so they cover every step ever logged. The length and reward histograms need the ``Sample``
    rows themselves, and retention thins those for old steps (it keeps every sample of the last K steps and
    a sampled fraction of older ones): an old step's histogram is drawn from the samples still stored, and
    is shown as shares of that step's stored samples so a thinned step reads like a full one. The word diff
    of two completions needs the completions, so it offers only the steps that still have them.

Definitions (one phase at a time: ``train`` = training rollouts, ``eval`` = evaluation rollouts)
    solve rate of a prompt at a step
        ``correct / n`` over that prompt's rollouts at that step (``correct``: verdict == "correct").
    first-solved step
        the first step at which the prompt had a correct rollout in this phase. The matrix lists prompts
        by it (earliest first; ties by prompt id), prompts never solved last (by prompt id).
    unsolved / learning / saturated at step s (cumulative)
        counted over the prompts sampled at or before s (a prompt not sampled yet is in none of them):
        *unsolved*: no correct rollout at any step <= s; *saturated*: every rollout of its latest
        observation <= s was correct (solve rate 1.0); *learning*: solved at some step <= s, but its
        latest observation <= s was not all correct (this includes a prompt that regressed). The three
        add up to the prompts seen so far.
    zero-variance share of step s
        the rollouts of s that belong to zero-variance groups, over all rollouts of s. A prompt's rollouts
        at a step are a zero-variance group when all their rewards are equal (``reward_min ==
        reward_max``; without rewards, when they were all correct or all not correct): GRPO gives them
        zero advantage, so they teach nothing. A single rollout counts as zero variance.
    truncation rate of step s
        rollouts of s cut at the length limit (``truncated``) over all rollouts of s: 1.0 when every one
        was, 0.0 when none was. From the aggregates; steps that have samples but no aggregates (rows
        logged before the aggregates existed) are counted from their samples.
    length / reward histogram of step s
        the stored samples of s counted per bin; the bins are the same for every step (edges given:
        ``edges[i] <= x < edges[i + 1]``, the last bin closed on the right). Length bins are whole tokens.
        The reward histogram counts the samples that have a reward (``reward_missing``: those without).

Speed: the matrix is built from one query over the aggregates (on PostgreSQL one bytea of fixed-width
records read by numpy; plain rows elsewhere) and numpy; the browser gets at most ``MAX_ROWS`` x ``MAX_COLS`` cells
(consecutive prompts and steps summed into buckets beyond that), the CSV every prompt and step.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np
from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Substr
from django.http import Http404

from webapp.errors import ServiceError
from webapp.runs import models as run_models

PHASES = ("train", "eval")
MAX_ROWS = 400  # prompts (or buckets of consecutive prompts) drawn in the browser
MAX_COLS = 200  # steps (or buckets of consecutive steps) drawn in the browser
MAX_LIMIT = 1_000_000
MAX_OFFSET = 10**9
MAX_BINS = 200
DEFAULT_BINS = 30
PREVIEW_CHARS = 120
MAX_DIFF_CHOICES = 400  # completions offered per step in the diff picker


def _bad(name: str, message: str):
    return ServiceError("invalid query", {name: [message]})


def _one(params, name: str, strict: bool) -> str | None:
    """The parameter's single value (None when absent). Strict: an empty or repeated value is a 400."""
    values = params.getlist(name) if hasattr(params, "getlist") else [params[name]] if name in params else []
    if not values:
        return None
    if strict and (len(values) != 1 or not str(values[0]).strip()):
        raise _bad(name, "a value, given once")
    return str(values[-1]).strip()


def _int(params, name: str, lo: int, hi: int, default: int | None, strict: bool) -> int | None:
    raw = _one(params, name, strict)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        if strict:
            raise _bad(name, "must be an integer") from None
        return default
    if not lo <= value <= hi:
        if strict:
            raise _bad(name, f"must be between {lo} and {hi}")
        return min(max(value, lo), hi)
    return value


def _phase(params, strict: bool) -> str:
    raw = _one(params, "phase", strict)
    if raw is None or raw == "":
        return "train"
    if raw not in PHASES:
        if strict:
            raise _bad("phase", f"one of {', '.join(PHASES)}")
        return "train"
    return raw


@dataclass
class MatrixQuery:
    """``phase`` (train | eval), the window of ordered prompts ``offset`` / ``limit`` (default: all), and
    the most ``rows`` / ``cols`` sent to the browser (buckets beyond that)."""

    phase: str = "train"
    offset: int = 0
    limit: int | None = None
    rows: int = MAX_ROWS
    cols: int = MAX_COLS

    @classmethod
    def parse(cls, params, *, strict: bool = False) -> MatrixQuery:
        return cls(
            phase=_phase(params, strict),
            offset=_int(params, "offset", 0, MAX_OFFSET, 0, strict),
            limit=_int(params, "limit", 1, MAX_LIMIT, None, strict),
            rows=_int(params, "rows", 1, 2000, MAX_ROWS, strict),
            cols=_int(params, "cols", 1, 2000, MAX_COLS, strict),
        )

    @property
    def params(self) -> dict:
        """The state as query parameters, defaults left out."""
        out = {"phase": self.phase if self.phase != "train" else "", "offset": self.offset or ""}
        out["limit"] = self.limit if self.limit is not None else ""
        out["rows"] = self.rows if self.rows != MAX_ROWS else ""
        out["cols"] = self.cols if self.cols != MAX_COLS else ""
        return {k: v for k, v in out.items() if v != ""}


# --- the aggregates, read in one query ------------------------------------------------------------------

_STAT_DTYPE = np.dtype([("prompt", "<i8"), ("step", "<i8"), ("n", "<i8"), ("correct", "<i8"), ("zv", "?")])
# One aggregate as 24 big-endian bytes: prompt id, step, and n << 32 | correct << 1 | zero-variance bit
# (n and correct are PositiveIntegerFields: below 2**31).
_PACKED_DTYPE = np.dtype([("prompt", ">i8"), ("step", ">i8"), ("packed", ">i8")])
_ZERO_VARIANCE_SQL = (
    "CASE WHEN reward_min IS NOT NULL AND reward_max IS NOT NULL THEN reward_min = reward_max "
    "ELSE correct = 0 OR correct = n END"
)


def _stat_table() -> str:
    return run_models.PromptStepStat._meta.db_table


def stat_rows(run_id: int, phase: str) -> np.ndarray:
    """Every aggregate of one run and phase as a numpy record array (prompt, step, n, correct, zv):
    one query. On PostgreSQL the rows come back as one bytea value (string_agg of fixed-width records,
    fetched in binary) that numpy reads without a Python loop; a row per aggregate through the driver
    cost seconds at a million aggregates."""
    if connection.vendor == "postgresql":
        # the run id is an int and the phase one of PHASES: nothing user-typed reaches the statement
        sql = (
            "SELECT string_agg(int8send(prompt_id) || int8send(step) || int8send("  # noqa: S608
            f"(n::int8 << 32) | (correct::int8 << 1) | (coalesce({_ZERO_VARIANCE_SQL}, true))::int::int8"
            f"), ''::bytea) FROM {connection.ops.quote_name(_stat_table())} "
            f"WHERE run_id = {int(run_id)} AND phase = '{PHASES[PHASES.index(phase)]}'"
        )
        import psycopg

        connection.ensure_connection()
        # a plain psycopg cursor on Django's connection (Django's own binds client-side, which cannot
        # return binary results): the bytea comes back as bytes, not as hex text twice its size
        with psycopg.Cursor(connection.connection) as raw:
            raw.execute(sql, binary=True)
            data = raw.fetchone()[0] or b""
        rec = np.frombuffer(data, dtype=_PACKED_DTYPE)
        out = np.empty(len(rec), dtype=_STAT_DTYPE)
        out["prompt"] = rec["prompt"]
        out["step"] = rec["step"]
        packed = rec["packed"].astype(np.int64)
        out["n"] = packed >> 32
        out["correct"] = (packed & 0xFFFFFFFF) >> 1
        out["zv"] = (packed & 1).astype(bool)
        return out
    return stat_rows_portable(run_id, phase)


def stat_rows_portable(run_id: int, phase: str) -> np.ndarray:
    """``stat_rows`` through the ORM, a row at a time (SQLite's embedded mode; the tests hold the
    PostgreSQL reading to it)."""
    rows = list(
        run_models.PromptStepStat.objects.filter(run_id=run_id, phase=phase).values_list(
            "prompt_id", "step", "n", "correct", "reward_min", "reward_max"
        )
    )
    out = np.empty(len(rows), dtype=_STAT_DTYPE)
    for i, (p, s, n, c, lo, hi) in enumerate(rows):
        zv = lo == hi if lo is not None and hi is not None else c in (0, n)
        out[i] = (p, s, n, c, zv)
    return out


def _dense_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values ascending, each value's index among them), like ``np.unique(values,
    return_inverse=True)`` but without a sort when the values span a small range (a run's prompt ids
    and steps do): a lookup table over [min, max]."""
    if len(values) == 0:
        return values[:0], values[:0].astype(np.int64)
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span > max(4 * len(values), 1 << 20):
        return np.unique(values, return_inverse=True)
    offsets = values - lo
    present = np.zeros(span, dtype=bool)
    present[offsets] = True
    distinct = np.flatnonzero(present)
    lookup = np.cumsum(present, dtype=np.int64) - 1
    return distinct + lo, lookup[offsets]


@dataclass
class Matrix:
    """The full prompt x step matrix of one phase, prompts in matrix order (first solved, unsolved last)."""

    phase: str
    prompts: np.ndarray  # prompt ids, in matrix order
    steps: np.ndarray  # the steps observed in this phase, ascending
    n: np.ndarray  # (P, S) rollouts
    correct: np.ndarray  # (P, S) correct rollouts
    first_solved: np.ndarray  # (P,) index into steps of the first solved step, -1 if never
    step_n: np.ndarray  # (S,) rollouts per step
    step_zero_variance: np.ndarray  # (S,) rollouts in zero-variance groups per step

    @property
    def rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.correct / np.maximum(self.n, 1), np.nan)

    def counts(self) -> dict:
        """unsolved / learning / saturated prompts at each step (the module's definitions)."""
        P, S = self.n.shape
        if P == 0 or S == 0:
            return {"unsolved": [], "learning": [], "saturated": [], "seen": []}
        observed = self.n > 0
        seen = np.logical_or.accumulate(observed, axis=1)
        solved = np.logical_or.accumulate(self.correct > 0, axis=1)
        cols = np.broadcast_to(np.arange(S), (P, S))
        last = np.maximum.accumulate(np.where(observed, cols, -1), axis=1)
        rows = np.arange(P)[:, None]
        safe = np.maximum(last, 0)
        full = (self.correct[rows, safe] == self.n[rows, safe]) & (last >= 0)
        unsolved = seen & ~solved
        saturated = seen & solved & full
        learning = seen & solved & ~full
        return {
            "unsolved": unsolved.sum(axis=0).tolist(),
            "learning": learning.sum(axis=0).tolist(),
            "saturated": saturated.sum(axis=0).tolist(),
            "seen": seen.sum(axis=0).tolist(),
        }

    def zero_variance_share(self) -> list[float | None]:
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(self.step_n > 0, self.step_zero_variance / np.maximum(self.step_n, 1), np.nan)
        return _floats(share)

    def first_solved_steps(self) -> list[int | None]:
        return [int(self.steps[i]) if i >= 0 else None for i in self.first_solved.tolist()]


def build_matrix(run_id: int, phase: str) -> Matrix:
    rec = stat_rows(run_id, phase)
    prompts, p_idx = _dense_index(rec["prompt"])
    steps, s_idx = _dense_index(rec["step"])
    P, S = len(prompts), len(steps)
    n = np.zeros((P, S), dtype=np.int64)
    correct = np.zeros((P, S), dtype=np.int64)
    n[p_idx, s_idx] = rec["n"]
    correct[p_idx, s_idx] = rec["correct"]
    step_n = np.bincount(s_idx, weights=rec["n"], minlength=S).astype(np.int64)
    step_zv = np.bincount(s_idx, weights=rec["n"] * rec["zv"], minlength=S).astype(np.int64)
    solved = correct > 0
    first = np.where(solved.any(axis=1), solved.argmax(axis=1), -1) if S else np.full(P, -1)
    # order: first-solved step ascending, never solved last; ties by prompt id (prompts is sorted)
    order = np.lexsort((prompts, np.where(first >= 0, first, S)))
    return Matrix(
        phase=phase,
        prompts=prompts[order],
        steps=steps,
        n=n[order],
        correct=correct[order],
        first_solved=first[order],
        step_n=step_n,
        step_zero_variance=step_zv,
    )


def _floats(values: np.ndarray, digits: int = 4) -> list:
    """A float array as a JSON-ready list: rounded, NaN as None."""
    arr = np.round(np.asarray(values, dtype=float), digits)
    out = arr.astype(object)
    out[np.isnan(arr)] = None
    return out.tolist()


def _buckets(size: int, most: int) -> np.ndarray:
    """Start indexes of at most ``most`` buckets of consecutive items (all of equal width but the last)."""
    width = max(1, math.ceil(size / most)) if size else 1
    return np.arange(0, size, width)


def _previews(ids) -> dict[int, dict]:
    rows = (
        run_models.RolloutPrompt.objects.filter(pk__in=list(ids))
        .annotate(
            preview=Substr("text", 1, PREVIEW_CHARS), answer=Substr("expected_answer", 1, PREVIEW_CHARS)
        )
        .values_list("pk", "preview", "answer", "data_source")
    )
    return {pk: {"preview": p, "expected_answer": a, "data_source": d} for pk, p, a, d in rows}


def matrix_view(run, query: MatrixQuery) -> dict:
    """What the matrix page and ``GET /api/runs/<id>/prompts/`` show: the window of ordered prompts
    (bucketed to ``query.rows`` rows) x the steps (bucketed to ``query.cols`` columns) as solve rates,
    the counts over time and the zero-variance share per step (over every step, never bucketed)."""
    m = build_matrix(run.id, query.phase)
    P, S = m.n.shape
    lo = min(query.offset, P)
    hi = P if query.limit is None else min(P, lo + query.limit)
    n, correct = m.n[lo:hi], m.correct[lo:hi]
    row_starts = _buckets(hi - lo, query.rows)
    col_starts = _buckets(S, query.cols)
    if len(row_starts) and len(col_starts):
        n_b = np.add.reduceat(np.add.reduceat(n, row_starts, axis=0), col_starts, axis=1)
        c_b = np.add.reduceat(np.add.reduceat(correct, row_starts, axis=0), col_starts, axis=1)
    else:
        n_b = c_b = np.zeros((len(row_starts), len(col_starts)), dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(n_b > 0, c_b / np.maximum(n_b, 1), np.nan)
    row_width = int(row_starts[1] - row_starts[0]) if len(row_starts) > 1 else max(hi - lo, 1)
    col_width = int(col_starts[1] - col_starts[0]) if len(col_starts) > 1 else 1
    first_steps = m.first_solved_steps()
    rows = []
    single = row_width == 1
    previews = _previews(m.prompts[lo:hi].tolist()) if single else {}
    ends = [*row_starts[1:].tolist(), hi - lo] if len(row_starts) else []
    for start, end in zip(row_starts.tolist(), ends, strict=True):
        a, b = lo + start, lo + end  # ranks [a, b) in matrix order
        row = {"rank": a, "count": b - a, "prompt": int(m.prompts[a]), "first_solved_step": first_steps[a]}
        if single:
            row.update(previews.get(row["prompt"], {"preview": "", "expected_answer": "", "data_source": ""}))
        rows.append(row)
    col_ends = [*col_starts[1:].tolist(), S] if len(col_starts) else []
    columns = [
        {"first": int(m.steps[a]), "last": int(m.steps[b - 1])}
        for a, b in zip(col_starts.tolist(), col_ends, strict=True)
    ]
    return {
        "run": run.id,
        "phase": query.phase,
        "prompts_total": P,
        "steps_total": S,
        "offset": lo,
        "window": hi - lo,
        "row_width": row_width,
        "col_width": col_width,
        "rows": rows,
        "columns": columns,
        "z": [_floats(r) for r in z] if z.size else [[] for _ in rows],
        "n": n_b.tolist(),
        "steps": m.steps.tolist(),
        "counts": m.counts(),
        "zero_variance_share": m.zero_variance_share(),
        "rollouts": m.step_n.tolist(),
    }


def matrix_csv(run, phase: str) -> str:
    """Every prompt x every step of the phase, prompts in matrix order: ``prompt_id,first_solved_step,
    <step>...`` with the solve rate (4 decimals) in each cell, empty where the prompt was not sampled."""
    m = build_matrix(run.id, phase)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prompt_id", "first_solved_step", *m.steps.tolist()])
    rate = np.round(m.rate, 4)
    if rate.size:
        # each distinct value is formatted once (solve rates are few: k/n)
        flat = rate.ravel()
        values, inverse = np.unique(np.nan_to_num(flat, nan=-1.0), return_inverse=True)
        text = np.array(["" if v < 0 else f"{v:g}" for v in values], dtype=object)
        cells = text[inverse].reshape(rate.shape)
        first = m.first_solved_steps()
        for i, prompt in enumerate(m.prompts.tolist()):
            fs = "" if first[i] is None else str(first[i])
            out.write(f"{prompt},{fs},{','.join(cells[i])}\n")
    return out.getvalue()


# --- one prompt -----------------------------------------------------------------------------------------


def prompt_get(run, prompt_id) -> run_models.RolloutPrompt:
    """The run's prompt (404 for another run's, which may be another team's)."""
    try:
        return run_models.RolloutPrompt.objects.get(run=run, pk=int(prompt_id))
    except (run_models.RolloutPrompt.DoesNotExist, ValueError, TypeError, OverflowError):
        raise Http404("no such prompt in this run") from None


def prompt_history(run, prompt) -> dict:
    """The prompt's solve rate at every step it was sampled, training and evaluation apart (from the
    aggregates, so every step ever logged), and its text and expected answer."""
    series = {p: {"steps": [], "n": [], "correct": [], "rate": [], "truncated": []} for p in PHASES}
    rows = (
        run_models.PromptStepStat.objects.filter(run=run, prompt=prompt)
        .order_by("phase", "step")
        .values_list("phase", "step", "n", "correct", "truncated")
    )
    for phase, step, n, correct, truncated in rows:
        s = series.setdefault(phase, {"steps": [], "n": [], "correct": [], "rate": [], "truncated": []})
        s["steps"].append(step)
        s["n"].append(n)
        s["correct"].append(correct)
        s["truncated"].append(truncated)
        s["rate"].append(round(correct / n, 4) if n else None)
    first = {
        p: next((st for st, c in zip(s["steps"], s["correct"], strict=True) if c), None)
        for p, s in series.items()
    }
    return {
        "run": run.id,
        "prompt": {
            "id": prompt.pk,
            "text": prompt.text,
            "expected_answer": prompt.expected_answer,
            "data_source": prompt.data_source,
            "first_solved_step": prompt.first_solved_step,
        },
        "first_solved": first,
        "train": series["train"],
        "eval": series["eval"],
    }


def prompt_sample_steps(run, prompt) -> list[dict]:
    """The (phase, step) pairs at which completions of this prompt are still stored (retention removes
    some old ones), with how many."""
    rows = (
        run_models.Sample.objects.filter(run=run, prompt_ref=prompt)
        .values("phase", "step")
        .annotate(count=Count("id"))
        .order_by("phase", "step")
    )
    return [{"phase": r["phase"], "step": r["step"], "count": r["count"]} for r in rows]


def parse_step_choice(raw: str | None) -> tuple[str, int] | None:
    """``40`` (training) or ``eval:40`` / ``train:40``; None when absent or malformed."""
    if not raw:
        return None
    phase, _, step = str(raw).rpartition(":")
    phase = phase or "train"
    if phase not in PHASES:
        return None
    try:
        return phase, int(step)
    except ValueError:
        return None


def step_completions(run, prompt, phase: str, step: int):
    """The stored completions of this prompt at one step, in group order."""
    return list(
        run_models.Sample.objects.filter(run=run, prompt_ref=prompt, phase=phase, step=step).order_by(
            F("group_index").asc(nulls_last=True), F("member_index").asc(nulls_last=True), "id"
        )[:MAX_DIFF_CHOICES]
    )


def pick_completion(samples, sample_id) -> object | None:
    """The chosen one (by id) among ``samples``, else the first correct one, else the first."""
    if not samples:
        return None
    try:
        wanted = int(sample_id) if sample_id not in (None, "") else None
    except (TypeError, ValueError):
        wanted = None
    for s in samples:
        if s.pk == wanted:
            return s
    return next((s for s in samples if s.verdict == "correct"), samples[0])


# --- distributions over steps ---------------------------------------------------------------------------


@dataclass
class DistributionQuery:
    phase: str = "train"
    bins: int = DEFAULT_BINS

    @classmethod
    def parse(cls, params, *, strict: bool = False) -> DistributionQuery:
        return cls(phase=_phase(params, strict), bins=_int(params, "bins", 1, MAX_BINS, DEFAULT_BINS, strict))


def _length_edges(lo: int, hi: int, bins: int) -> tuple[int, int, list[int]]:
    """Whole-token bins covering [lo, hi]: (first edge, width, edges)."""
    width = max(1, math.ceil((hi - lo + 1) / bins))
    count = max(1, math.ceil((hi - lo + 1) / width))
    return lo, width, [lo + width * i for i in range(count + 1)]


def _reward_edges(lo: float, hi: float, bins: int) -> tuple[float, float, list[float], int]:
    if hi <= lo:  # one value: one bin around it
        return lo - 0.5, 1.0, [lo - 0.5, lo + 0.5], 1
    width = (hi - lo) / bins
    return lo, width, [lo + width * i for i in range(bins)] + [hi], bins


# One sample as 24 big-endian bytes: step, length << 1 | truncated, reward (NaN: none).
_SAMPLE_PACKED = np.dtype([("step", ">i8"), ("length", ">i8"), ("reward", ">f8")])


def sample_rows(run_id: int, phase: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(step, length, truncated, reward with NaN where none) of every stored sample of one run and
    phase, in one query (on PostgreSQL one bytea read by numpy, as ``stat_rows``)."""
    if connection.vendor == "postgresql":
        import psycopg

        table = connection.ops.quote_name(run_models.Sample._meta.db_table)
        sql = (
            "SELECT string_agg(int8send(step) || int8send((length::int8 << 1) | truncated::int::int8) || "  # noqa: S608
            f"float8send(coalesce(reward, 'NaN'::float8)), ''::bytea) FROM {table} "
            f"WHERE run_id = {int(run_id)} AND phase = '{PHASES[PHASES.index(phase)]}'"
        )
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as raw:
            raw.execute(sql, binary=True)
            data = raw.fetchone()[0] or b""
        rec = np.frombuffer(data, dtype=_SAMPLE_PACKED)
        packed = rec["length"].astype(np.int64)
        return (
            rec["step"].astype(np.int64),
            packed >> 1,
            (packed & 1).astype(bool),
            rec["reward"].astype(np.float64),
        )
    return sample_rows_portable(run_id, phase)


def sample_rows_portable(run_id: int, phase: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``sample_rows`` through the ORM (SQLite's embedded mode; the tests hold PostgreSQL's to it)."""
    rows = list(
        run_models.Sample.objects.filter(run_id=run_id, phase=phase).values_list(
            "step", "length", "truncated", "reward"
        )
    )
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.astype(bool), empty.astype(np.float64)
    step, length, truncated, reward = zip(*rows, strict=True)
    return (
        np.array(step, dtype=np.int64),
        np.array(length, dtype=np.int64),
        np.array(truncated, dtype=bool),
        np.array([np.nan if r is None else r for r in reward], dtype=np.float64),
    )


def _counts(s_idx: np.ndarray, bins: np.ndarray, steps: int, nb: int) -> list[list[int]]:
    """(steps, nb) counts of (step index, bin) pairs."""
    return np.bincount(s_idx * nb + bins, minlength=steps * nb).reshape(steps, nb).tolist()


def distributions(run, query: DistributionQuery) -> dict:
    """Length and reward histograms per step (stored samples, one query), the truncation rate per step
    (aggregates, kept forever; samples for steps without aggregates)."""
    step, length, truncated, reward = sample_rows(run.id, query.phase)
    steps, s_idx = _dense_index(step)
    S = len(steps)
    n = np.bincount(s_idx, minlength=S)
    rewarded = ~np.isnan(reward)
    per_step = list(
        zip(
            steps.tolist(),
            n.tolist(),
            np.bincount(s_idx, weights=truncated, minlength=S).astype(np.int64).tolist(),
            np.bincount(s_idx, weights=rewarded, minlength=S).astype(np.int64).tolist(),
            strict=True,
        )
    )
    out: dict = {"run": run.id, "phase": query.phase, "steps": steps.tolist(), "samples": n.tolist()}
    if S:
        start, width, edges = _length_edges(int(length.min()), int(length.max()), query.bins)
        nb = len(edges) - 1
        bins = np.clip((length - start) // width, 0, nb - 1)
        out["length"] = {"edges": edges, "counts": _counts(s_idx, bins, S, nb), "unit": "tokens"}
    else:
        out["length"] = {"edges": [], "counts": [], "unit": "tokens"}
    if rewarded.any():
        r = reward[rewarded]
        start, width, edges, nb = _reward_edges(float(r.min()), float(r.max()), query.bins)
        bins = np.clip(np.floor((r - start) / width).astype(np.int64), 0, nb - 1)
        out["reward"] = {
            "edges": [round(e, 6) for e in edges],
            "counts": _counts(s_idx[rewarded], bins, S, nb),
        }
    else:
        out["reward"] = {"edges": [], "counts": [[] for _ in range(S)]}
    out["reward"]["missing"] = [p[1] - p[3] for p in per_step]
    out["truncation"] = truncation(run, query.phase, per_step)
    return out


def truncation(run, phase: str, per_step=None) -> dict:
    """Truncated rollouts over all rollouts, per step: from the aggregates; a step with no aggregate
    (samples logged before they existed) from its samples."""
    stats = (
        run_models.PromptStepStat.objects.filter(run=run, phase=phase)
        .values("step")
        .annotate(n=Sum("n"), truncated=Sum("truncated"))
        .order_by("step")
        .values_list("step", "n", "truncated")
    )
    by_step = {s: (n, t, "aggregates") for s, n, t in stats}
    if per_step is None:
        per_step = (
            run_models.Sample.objects.filter(run=run, phase=phase)
            .values("step")
            .annotate(n=Count("id"), truncated=Count("id", filter=Q(truncated=True)), r=Count("reward"))
            .values_list("step", "n", "truncated", "r")
        )
    for step, n, t, _ in per_step:
        by_step.setdefault(step, (n, t, "samples"))
    steps = sorted(by_step)
    return {
        "steps": steps,
        "n": [by_step[s][0] for s in steps],
        "truncated": [by_step[s][1] for s in steps],
        "rate": [round(by_step[s][1] / by_step[s][0], 6) if by_step[s][0] else None for s in steps],
        "source": [by_step[s][2] for s in steps],
    }
