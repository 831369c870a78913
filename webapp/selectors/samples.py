"""The sample query: one reading of the query string for the samples browser (``/runs/<id>/samples/``)
and ``GET /api/runs/<id>/samples/``, so the same parameters select the same samples in the same order;
and what the group and token views read (one group of one step; one sample's per-token arrays).

Filters::

    step=<s>  step_min=<s>  step_max=<s>      steps (inclusive)
    phase=train|eval                          training or evaluation rollouts
    verdict=<v>[,<v>...]                      of webapp.runs.models.SAMPLE_VERDICTS
    truncated=true|false
    finish_reason=stop|length|error
    group_status=kept|zero_variance|solved_all|unsolved_all
        zero_variance: every group whose rewards are all equal (solved n/n and unsolved 0/n included);
        solved_all / unsolved_all: the zero-variance groups all correct / none correct; kept: the rest.
        The trainer's own reading (``extra["group_status"]``) when it sent one, otherwise derived from
        the group's members (same run, step, phase and group_index; a row without group_index is in
        no group and matches none).
    high_reward_wrong=<r>                     reward >= r and the verdict is not "correct"
    data_source=<name>
    min_len=<n>  max_len=<n>                  length in tokens (inclusive)
    q=<words>                                 words of the prompt or the completion: PostgreSQL full
        text, the 'simple' configuration (no stemming, no stop words: the GIN indexes on
        to_tsvector('simple', ...)), web-search syntax ("a phrase", or, -word)
    contains=<text>                           a literal substring of the prompt or the completion,
        case-insensitive (ILIKE, % and _ taken literally; the trigram indexes), at least 3 characters

Ordering: ``ordering=[-]step|reward|advantage|length`` (default ``step``). By step, a step's samples
come group by group, member by member (then by id); ``-step`` is its exact reverse. By the other keys,
ties go by id (ascending) and samples without a reward or advantage are listed last either way.

Paging: page numbers; the count stops a little past the requested page (``COUNT_CAP``, then "2,000+"),
so no page counts a million rows. A search first counts its matches up to the cap with the GIN / trigram
index (webapp.datasets.selectors.CappedPaginator): few matches are read from the index and sorted, many
are found by walking the (run, step) index and testing rows until the page is full.

SQLite (embedded mode): no full-text or trigram index; ``q`` and ``contains`` both become
case-insensitive substring matches (icontains) over the completion and the prompt.

``strict`` (the API): a bad parameter raises ``ServiceError`` naming it (a 400). Otherwise (the pages)
it is ignored and reported in ``errors``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from django.db import connection
from django.db.models import BooleanField, Exists, F, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Length, Right, Substr

from webapp.datasets.selectors import CappedPaginator
from webapp.errors import ServiceError
from webapp.runs.models import SAMPLE_VERDICTS, RolloutPrompt, Run, Sample, SampleTokens

SAMPLE_SORT_KEYS = ("step", "reward", "advantage", "length")
GROUP_STATUSES = ("kept", "zero_variance", "solved_all", "unsolved_all")
FILTERED_STATUSES = ("zero_variance", "solved_all", "unsolved_all")  # the group had no learning signal
FINISH_REASONS = ("stop", "length", "error")
PHASES = ("train", "eval")
PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50
COUNT_CAP = 2_000
MAX_QUERY_CHARS = 500
MIN_CONTAINS_CHARS = 3
MAX_STEP = 2**62
MAX_LEN = 2**31 - 1
REWARD_TOLERANCE = 1e-9  # rewards closer than this count as equal (webapp.runs.samples.group_status)
MAX_PROMPT_IDS = 20_000  # prompts matched by a search, passed as a list (above: a subquery)
PREVIEW_CHARS = 160  # head and tail of a completion in a list row
#: the API refuses these empty or repeated (the schema's integers, numbers and enums)
SINGLE_TYPED = (
    "step", "step_min", "step_max", "phase", "truncated", "finish_reason", "group_status",
    "high_reward_wrong", "min_len", "max_len", "ordering", "contains",
)  # fmt: skip
BOOLS = {"true": True, "1": True, "false": False, "0": False}

TS_MATCH = "to_tsvector('simple', {col}) @@ websearch_to_tsquery('simple', %s)"
LIKE_MATCH = "{col} ILIKE %s"


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards and its escape character taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _col(model, name: str) -> str:
    return f'"{model._meta.db_table}"."{name}"'


def _raw(sql: str, params: list) -> RawSQL:
    return RawSQL(sql, params, output_field=BooleanField())


class SampleQuery:
    """The samples list's state, read from the query string (every view of it is a shareable URL),
    and the queryset it selects."""

    def __init__(self, params, run: Run, *, strict: bool = False):
        p = params
        self.run = run
        self.strict = strict
        self._queryset = None
        self.errors: dict[str, str] = {}

        def bad(name: str, message: str) -> None:
            if strict:
                raise ServiceError("invalid query", {name: [message]})
            self.errors[name] = message

        if strict and hasattr(p, "getlist"):
            for name in SINGLE_TYPED:
                values = p.getlist(name)
                if name in p and (len(values) != 1 or not values[0].strip()):
                    bad(name, "a value, given once")

        def text(name: str, limit: int = MAX_QUERY_CHARS) -> str:
            value = (p.get(name) or "").strip()
            if "\x00" in value:
                bad(name, "must not contain NUL characters")
                return ""
            if len(value) > limit:
                bad(name, f"at most {limit} characters")
                return ""
            return value

        def integer(name: str, hi: int) -> int | None:
            raw = (p.get(name) or "").strip()
            if not raw:
                return None
            try:
                value = int(raw)
            except ValueError:
                bad(name, "must be an integer")
                return None
            if not 0 <= value <= hi:
                bad(name, f"must be between 0 and {hi}")
                return None
            return value

        def choice(name: str, choices) -> str:
            raw = (p.get(name) or "").strip()
            if raw and raw not in choices:
                bad(name, f"one of {', '.join(choices)}")
                return ""
            return raw

        self.step = integer("step", MAX_STEP)
        self.step_min = integer("step_min", MAX_STEP)
        self.step_max = integer("step_max", MAX_STEP)
        if self.step_min is not None and self.step_max is not None and self.step_min > self.step_max:
            bad("step_max", "must be at least step_min")
            self.step_max = None
        self.phase = choice("phase", PHASES)
        raw_verdict = text("verdict")
        verdicts = [v.strip() for v in raw_verdict.split(",") if v.strip()]
        unknown = [v for v in verdicts if v not in SAMPLE_VERDICTS]
        if unknown:
            bad("verdict", f"unknown verdict {unknown[0]!r}; one of {', '.join(SAMPLE_VERDICTS)}")
            verdicts = [v for v in verdicts if v in SAMPLE_VERDICTS]
        self.verdicts = verdicts
        raw_truncated = (p.get("truncated") or "").strip().lower()
        self.truncated = BOOLS.get(raw_truncated)
        if raw_truncated and self.truncated is None:
            bad("truncated", "true or false")
        self.finish_reason = choice("finish_reason", FINISH_REASONS)
        self.group_status = choice("group_status", GROUP_STATUSES)
        self.high_reward_wrong = None
        raw_hrw = (p.get("high_reward_wrong") or "").strip()
        if raw_hrw:
            try:
                value = float(raw_hrw)
            except ValueError:
                value = math.nan
            if math.isfinite(value):
                self.high_reward_wrong = value
            else:
                bad("high_reward_wrong", "a finite number (the lowest reward)")
        self.data_source = text("data_source")
        self.min_len = integer("min_len", MAX_LEN)
        self.max_len = integer("max_len", MAX_LEN)
        self.q = text("q")
        self.contains = text("contains")
        if self.contains and len(self.contains) < MIN_CONTAINS_CHARS:
            bad("contains", f"at least {MIN_CONTAINS_CHARS} characters")
            self.contains = ""
        ordering = (p.get("ordering") or "step").strip()
        if ordering.lstrip("-") not in SAMPLE_SORT_KEYS:
            bad("ordering", f"one of {', '.join(SAMPLE_SORT_KEYS)}, - for descending")
            ordering = "step"
        self.ordering, self.key, self.desc = ordering, ordering.lstrip("-"), ordering.startswith("-")
        try:
            self.page_size = int(p.get("page_size", DEFAULT_PAGE_SIZE))
        except (TypeError, ValueError):
            self.page_size = DEFAULT_PAGE_SIZE
        if self.page_size not in PAGE_SIZES:
            self.page_size = DEFAULT_PAGE_SIZE  # the page's sizes; the API's paginator reads its own

    # --- the state as a URL -------------------------------------------------------------------------

    @property
    def params(self) -> dict:
        """The state as query parameters (defaults left out), without the page."""
        return {
            "q": self.q,
            "contains": self.contains,
            "step": self.step,
            "step_min": self.step_min,
            "step_max": self.step_max,
            "phase": self.phase,
            "verdict": ",".join(self.verdicts),
            "truncated": "" if self.truncated is None else str(self.truncated).lower(),
            "finish_reason": self.finish_reason,
            "group_status": self.group_status,
            "high_reward_wrong": "" if self.high_reward_wrong is None else f"{self.high_reward_wrong:g}",
            "data_source": self.data_source,
            "min_len": self.min_len,
            "max_len": self.max_len,
            "ordering": self.ordering if self.ordering != "step" else "",
            "page_size": self.page_size if self.page_size != DEFAULT_PAGE_SIZE else "",
        }

    @property
    def filtered(self) -> bool:
        skip = {"ordering", "page_size"}
        return any(v not in (None, "") for k, v in self.params.items() if k not in skip)

    @property
    def search(self) -> bool:
        return bool(self.q or self.contains)

    # --- the queryset ---------------------------------------------------------------------------------

    def queryset(self):
        """The selected samples in order (built once: a search looks its prompts up first)."""
        if self._queryset is None:
            self._queryset = self._build()
        return self._queryset.all()

    def _build(self):
        qs = Sample.objects.filter(run=self.run)
        if self.step is not None:
            qs = qs.filter(step=self.step)
        if self.step_min is not None:
            qs = qs.filter(step__gte=self.step_min)
        if self.step_max is not None:
            qs = qs.filter(step__lte=self.step_max)
        if self.phase:
            qs = qs.filter(phase=self.phase)
        if self.verdicts:
            qs = qs.filter(verdict__in=self.verdicts)
        if self.truncated is not None:
            qs = qs.filter(truncated=self.truncated)
        if self.finish_reason:
            qs = qs.filter(finish_reason=self.finish_reason)
        if self.high_reward_wrong is not None:
            qs = qs.filter(reward__gte=self.high_reward_wrong).exclude(verdict="correct")
        if self.data_source:
            qs = qs.filter(data_source=self.data_source)
        if self.min_len is not None:
            qs = qs.filter(length__gte=self.min_len)
        if self.max_len is not None:
            qs = qs.filter(length__lte=self.max_len)
        if self.group_status:
            qs = qs.filter(group_status_q(self.group_status))
        if self.q:
            qs = qs.filter(self._text_q(self.q, words=True))
        if self.contains:
            qs = qs.filter(self._text_q(self.contains, words=False))
        return qs.order_by(*self.order_by())

    def _text_q(self, text: str, *, words: bool) -> Q:
        """The completion, the run's prompt text (RolloutPrompt, looked up first: a run has a few
        thousand prompts) or, for rows logged before prompts were stored once, the row's own prompt."""
        if connection.vendor != "postgresql":
            return (
                Q(completion__icontains=text)
                | Q(prompt_ref__text__icontains=text)
                | Q(prompt_ref__isnull=True, prompt__icontains=text)
            )
        template, value = (TS_MATCH, text) if words else (LIKE_MATCH, like_pattern(text))
        prompts = RolloutPrompt.objects.filter(run=self.run).filter(
            _raw(template.format(col=_col(RolloutPrompt, "text")), [value])
        )
        ids = list(prompts.values_list("id", flat=True)[: MAX_PROMPT_IDS + 1])
        match = Q(_raw(template.format(col=_col(Sample, "completion")), [value]))
        if len(ids) > MAX_PROMPT_IDS:
            match |= Q(prompt_ref__in=prompts.values("id"))
        elif ids:
            match |= Q(prompt_ref_id__in=ids)
        if Sample.objects.filter(run=self.run, prompt_ref__isnull=True).exists():
            # legacy rows: their prompt is not indexed (small runs of earlier versions)
            legacy = _raw(template.format(col=_col(Sample, "prompt")), [value])
            match |= Q(prompt_ref__isnull=True) & Q(legacy)
        return match

    def order_by(self) -> list:
        """By step: step, group, member, id, all in one direction, which is the (run, step, group_index,
        member_index) index read forwards or backwards (a page stops after its rows; -step is the
        exact reverse of step). Other keys: the key, samples without one last, ties by id."""
        key, desc = self.key, self.desc
        if key == "step":
            names = ("step", "group_index", "member_index", "id")
            return [F(n).desc() if desc else F(n).asc() for n in names]
        return [F(key).desc(nulls_last=True) if desc else F(key).asc(nulls_last=True), F("id").asc()]

    def paginator(self, queryset, per_page: int) -> SamplePaginator:
        """``queryset``: this query's queryset, possibly with more columns (list_rows); the count reads
        the bare filter."""
        return SamplePaginator(
            queryset,
            per_page,
            cap=COUNT_CAP,
            search=self.search,
            by_row=self.key == "step",
            count_source=self.queryset(),
        )


class SamplePaginator(CappedPaginator):
    """CappedPaginator whose count reads ``count_source`` (the filter without a page's extra columns:
    no completion excerpts cut and no token lookups for up to COUNT_CAP rows)."""

    def __init__(self, object_list, per_page, *, count_source=None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.count_source = count_source

    def validate_number(self, number):
        if not self.search and "count" not in self.__dict__ and str(number).strip() == "1":
            return 1  # the first page is read before counting (page())
        return super().validate_number(number)

    def page(self, number):
        """A first page that is not full says the count itself: a selective filter (whose count
        would read as far as its page) is read once, not twice."""
        if not self.search and "count" not in self.__dict__ and self.validate_number(number) == 1:
            rows = list(self.object_list[: self.per_page + 1])
            if len(rows) <= self.per_page:
                self.__dict__["count"] = len(rows)
                return self._get_page(rows, 1, self)
            return self._get_page(rows[: self.per_page], 1, self)
        return super().page(number)

    @cached_property
    def count(self) -> int:
        page_rows = self.object_list
        if self.count_source is not None:
            self.object_list = self.count_source
        try:
            return CappedPaginator.count.func(self)
        finally:
            self.object_list = page_rows


# --- groups -------------------------------------------------------------------------------------------


def _members_of_outer():
    return Sample.objects.filter(
        run_id=OuterRef("run_id"),
        step=OuterRef("step"),
        phase=OuterRef("phase"),
        group_index=OuterRef("group_index"),
    )


def group_status_q(status: str) -> Q:
    """Samples whose group has this status (see the module's docstring): the trainer's reading when
    it sent one, else derived from the members' rewards and verdicts."""
    members = _members_of_outer()
    differs = Exists(
        members.filter(
            Q(reward__lt=OuterRef("reward") - REWARD_TOLERANCE)
            | Q(reward__gt=OuterRef("reward") + REWARD_TOLERANCE)
        )
    )
    derived = {
        "kept": Q(differs),
        "zero_variance": ~Q(differs),
        "solved_all": ~Q(differs) & ~Q(Exists(members.exclude(verdict="correct"))),
        "unsolved_all": ~Q(differs) & ~Q(Exists(members.filter(verdict="correct"))),
    }[status]
    stored = FILTERED_STATUSES if status == "zero_variance" else (status,)
    sent = Q(extra__has_key="group_status")
    return (sent & Q(extra__group_status__in=list(stored))) | (~sent & Q(group_index__isnull=False) & derived)


def derive_group_status(members) -> str:
    """kept | zero_variance | solved_all | unsolved_all: a trainer's (or ingest's) reading stored in
    extra["group_status"] wins; otherwise the rule of webapp.runs.samples.group_status."""
    for m in members:
        sent = m.extra.get("group_status") if isinstance(m.extra, dict) else None
        if sent in GROUP_STATUSES:
            return sent
    rewards = [m.reward for m in members if m.reward is not None]
    if rewards and max(rewards) - min(rewards) > REWARD_TOLERANCE:
        return "kept"
    if all(m.verdict for m in members):
        correct = sum(m.verdict == "correct" for m in members)
        if correct == len(members):
            return "solved_all"
        if correct == 0:
            return "unsolved_all"
    return "zero_variance" if rewards else "kept"


GROUP_REASONS = {
    "kept": "kept: the rewards differ, so the advantages are not all zero (a learning signal)",
    "zero_variance": "filtered: zero variance (every reward equal, every advantage zero)",
    "solved_all": "filtered: solved {n}/{n} (every completion correct: zero variance)",
    "unsolved_all": "filtered: unsolved 0/{n} (no completion correct: zero variance)",
}


@dataclass
class Group:
    run: Run
    step: int
    group_index: int
    phase: str
    members: list
    phases: list[str]  # the phases that have this (step, group_index)

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def prompt(self) -> RolloutPrompt | None:
        return next((m.prompt_ref for m in self.members if m.prompt_ref_id), None)

    @property
    def prompt_text(self) -> str:
        p = self.prompt
        return p.text if p else next((m.prompt for m in self.members if m.prompt), "")

    @property
    def expected_answer(self) -> str:
        p = self.prompt
        if p and p.expected_answer:
            return p.expected_answer
        return next(
            (str(m.extra.get("expected_answer")) for m in self.members if m.extra.get("expected_answer")), ""
        )

    @property
    def status(self) -> str:
        return derive_group_status(self.members)

    @property
    def sent_status(self) -> bool:
        return any(isinstance(m.extra, dict) and "group_status" in m.extra for m in self.members)

    @property
    def reason(self) -> str:
        return GROUP_REASONS[self.status].format(n=self.n)

    @property
    def solved(self) -> int:
        return sum(m.verdict == "correct" for m in self.members)

    @property
    def reward_stats(self) -> dict:
        rewards = [m.reward for m in self.members if m.reward is not None]
        if not rewards:
            return {"mean": None, "std": None, "min": None, "max": None}
        a = np.asarray(rewards, dtype=float)
        return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}

    @property
    def components(self) -> list[str]:
        names: list[str] = []
        for m in self.members:
            for k in (m.rewards or {}) if isinstance(m.rewards, dict) else ():
                if k not in names:
                    names.append(k)
        return names


def group_get(run: Run, step: int, group_index: int, phase: str = "") -> Group | None:
    """The members of one group (ordered by member index), of the given phase or, unset, the
    training group when there is one (else the evaluation group). None: no such group."""
    base = Sample.objects.filter(run=run, step=step, group_index=group_index)
    phases = sorted(set(base.values_list("phase", flat=True)), key=lambda p: (p != "train", p))
    if not phases:
        return None
    chosen = phase or phases[0]
    members = list(
        base.filter(phase=chosen)
        .select_related("prompt_ref")
        .annotate(has_tokens=has_tokens_expr())
        .order_by(F("member_index").asc(nulls_last=True), "id")
    )
    if not members:
        return None
    return Group(run=run, step=step, group_index=group_index, phase=chosen, members=members, phases=phases)


def neighbour_groups(run: Run, step: int, group_index: int, phase: str) -> dict:
    """The previous and next group of the same step (by group index), as (step, group) or None."""
    qs = Sample.objects.filter(run=run, step=step, phase=phase)
    prev_g = (
        qs.filter(group_index__lt=group_index)
        .order_by("-group_index")
        .values_list("group_index", flat=True)
        .first()
    )
    next_g = (
        qs.filter(group_index__gt=group_index)
        .order_by("group_index")
        .values_list("group_index", flat=True)
        .first()
    )
    return {"prev": prev_g, "next": next_g}


def has_tokens_expr() -> Exists:
    return Exists(SampleTokens.objects.filter(sample=OuterRef("pk")))


# --- list rows ----------------------------------------------------------------------------------------


def list_rows(qs):
    """A page's rows, cheaply: no full texts, the completion's head and tail, the prompt's excerpt and
    the expected answer, and whether per-token arrays exist."""
    return (
        qs.select_related("prompt_ref")
        .only(
            "id",
            "run_id",
            "step",
            "reward",
            "advantage",
            "verdict",
            "length",
            "truncated",
            "extra",
            "group_index",
            "member_index",
            "finish_reason",
            "extracted_answer",
            "phase",
            "data_source",
            "prompt_ref__id",
            "prompt_ref__expected_answer",
            "prompt_ref__data_source",
        )  # fmt: skip
        .annotate(
            head=Substr("completion", 1, PREVIEW_CHARS),
            tail=Right("completion", PREVIEW_CHARS),
            completion_chars=Length("completion"),
            prompt_excerpt=Substr("prompt", 1, PREVIEW_CHARS),
            ref_excerpt=Substr("prompt_ref__text", 1, PREVIEW_CHARS),
            has_tokens=has_tokens_expr(),
        )
    )


def row_preview(sample) -> str:
    """The completion's head and tail (from list_rows), joined by an ellipsis when they do not meet."""
    n, head, tail = sample.completion_chars, sample.head, sample.tail
    if n <= PREVIEW_CHARS:
        return head
    if n <= 2 * PREVIEW_CHARS:
        return head + tail[2 * PREVIEW_CHARS - n :]
    return f"{head} … {tail}"


def expected_answer(sample) -> str:
    ref = getattr(sample, "prompt_ref", None)
    if ref is not None and ref.expected_answer:
        return ref.expected_answer
    extra = sample.extra if isinstance(sample.extra, dict) else {}
    value = extra.get("expected_answer", extra.get("answer", ""))
    return value if isinstance(value, str) else str(value)


# --- tokens -------------------------------------------------------------------------------------------


def _f16(blob) -> np.ndarray | None:
    if blob is None:
        return None
    return np.frombuffer(bytes(blob), dtype="<f2").astype(np.float64)


@dataclass
class TokenView:
    tokens: list[dict]  # {i, text, offset, logprob, entropy, engine_logprob, gap}
    has_logprobs: bool
    has_entropies: bool
    has_engine: bool

    def top_entropy(self, k: int = 20) -> list[dict]:
        rows = [t for t in self.tokens if t["entropy"] is not None]
        return sorted(rows, key=lambda t: (-t["entropy"], t["i"]))[:k]

    def top_gap(self, k: int = 10) -> list[dict]:
        rows = [t for t in self.tokens if t["gap"] is not None]
        return sorted(rows, key=lambda t: (-abs(t["gap"]), t["i"]))[:k]

    def gap_summary(self) -> dict | None:
        gaps = np.asarray([t["gap"] for t in self.tokens if t["gap"] is not None], dtype=float)
        if not gaps.size:
            return None
        return {
            "tokens": int(gaps.size),
            "mean": float(gaps.mean()),
            "mean_abs": float(np.abs(gaps).mean()),
            "max_abs": float(np.abs(gaps).max()),
        }


def _finite(a: np.ndarray | None, i: int) -> float | None:
    if a is None or i >= a.size:
        return None
    v = float(a[i])
    return v if math.isfinite(v) else None


def token_view(sample: Sample, tokens: SampleTokens) -> TokenView:
    """The completion cut at the token offsets, each piece with its log-prob, entropy, the engine's
    log-prob and the gap (engine - trainer). Offsets out of order or past the text are clamped."""
    text = sample.completion
    offsets = np.frombuffer(bytes(tokens.offsets or b""), dtype="<i4").astype(np.int64)
    logprobs, entropies, engine = _f16(tokens.logprobs), _f16(tokens.entropies), _f16(tokens.engine_logprobs)
    n = int(offsets.size)
    starts = np.clip(offsets, 0, len(text))
    starts = np.maximum.accumulate(starts) if n else starts
    out = []
    for i in range(n):
        start = int(starts[i])
        end = int(starts[i + 1]) if i + 1 < n else len(text)
        lp, en, eng = _finite(logprobs, i), _finite(entropies, i), _finite(engine, i)
        out.append(
            {
                "i": i,
                "offset": start,
                "text": text[start:end],
                "logprob": lp,
                "entropy": en,
                "engine_logprob": eng,
                "gap": eng - lp if eng is not None and lp is not None else None,
            }
        )
    if n and int(starts[0]) > 0:  # text before the first token (a prompt tail, a BOS) stays visible
        out.insert(
            0,
            {"i": -1, "offset": 0, "text": text[: int(starts[0])], "logprob": None, "entropy": None,
             "engine_logprob": None, "gap": None},
        )  # fmt: skip
    return TokenView(
        tokens=out,
        has_logprobs=logprobs is not None,
        has_entropies=entropies is not None,
        has_engine=engine is not None and logprobs is not None,
    )
