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
        text, the 'simple' configuration (no stemming, no stop words: the prompts' GIN index on
        to_tsvector('simple', text); the completions' vectors in SampleSearch, written after ingest
        commits, and the run's rows not indexed yet matched directly: webapp.runs.sample_search),
        web-search syntax ("a phrase", or, -word)
    contains=<text>                           a literal substring of the prompt or the completion,
        case-insensitive, at least 3 characters. Prompts: ILIKE (% and _ taken literally) on their
        trigram index. Completions are compressed (webapp.runs.sample_text) and have no trigram index (it
        made ingest ~10x slower): the full-text index is a prefilter on the literal's whole words
        (PostgreSQL's parser reads the literal; words inside it exact, the last one as a prefix, the
        first one skipped when it may be the tail of a word), plus the run's rows not indexed yet; the
        candidates are read in page order, decoded and rechecked in Python until the page (and one row
        more) is found (``contains_scan``; counts as a walk does: "50+"). A literal without such a word
        ("oxe") scans every row of the run that way. The scan stops at SCAN_TIMEOUT_MS: a page not full
        by then is a 400 on ``contains`` ("pattern too short to search a run this large; add a word or a
        filter").

Ordering: ``ordering=[-]step|reward|advantage|length`` (default ``step``). By step, a step's samples
come group by group, member by member (then by id); ``-step`` is its exact reverse. By the other keys,
ties go by id (ascending) and samples without a reward or advantage are listed last either way.

Paging: page numbers, never a COUNT(*) over the run (SamplePaginator). Counts stop a little past the
requested page (``COUNT_CAP``, then "2,000+"); a first page that is not full is its own count. A word
search whose matches are 1 % or more of the samples (WALK_DENSITY; counted in the completions' index
alone, up to that many or WALK_COUNT_MAX: the planner's estimate of a word missing from its statistics is
a fixed 0.5 %) walks the order's index (by step (run, step, group, member), by another key (run, key
nulls last, id)), testing rows until the page is full, and counts only what it saw ("50+"); a rarer one
is read from the GIN index and sorted. A substring search scans its candidates in page order (see
``contains``).

SQLite (embedded mode): no full-text or trigram index; ``q`` and ``contains`` both become
case-insensitive substring matches (icontains) over the completion and the prompt.

Group status is the column ``Sample.group_status`` (index (run, group_status, step)); grouped rows without
one (none since migration 0012) are derived from their members. Sorts by reward, advantage and length
read the (run, key nulls last, id) indexes in either direction.

``strict`` (the API): a bad parameter raises ``ServiceError`` naming it (a 400). Otherwise (the pages)
it is ignored and reported in ``errors``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import OperationalError, connection
from django.db.models import BooleanField, Exists, ExpressionWrapper, F, OuterRef, Q, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Substr

from webapp.errors import ServiceError
from webapp.planner import planner_settings
from webapp.runs import sample_search, sample_text
from webapp.runs.models import (
    GROUP_STATUSES,
    SAMPLE_FINISH_REASONS,
    SAMPLE_PHASES,
    SAMPLE_VERDICTS,
    RolloutPrompt,
    Run,
    Sample,
    SampleTokens,
)
from webapp.runs.samples import REWARD_TOLERANCE, group_status

SAMPLE_SORT_KEYS = ("step", "reward", "advantage", "length")
FILTERED_STATUSES = ("zero_variance", "solved_all", "unsolved_all")  # the group had no learning signal
FINISH_REASONS = SAMPLE_FINISH_REASONS
PHASES = SAMPLE_PHASES
PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50
COUNT_CAP = 2_000
MAX_QUERY_CHARS = 500
MIN_CONTAINS_CHARS = 3
SCAN_TIMEOUT_MS = 5_000  # a substring search's scan stops here (a 400 unless its page was full)
SCAN_CHUNK = 500  # rows a substring search's scan reads per fetch
SCAN_TIMEOUT_MESSAGE = "pattern too short to search a run this large; add a word or a filter"
#: ts_debug token types that are lexemes of to_tsvector('simple', ...) wherever they occur whole
COMPOUND_TOKENS = ("asciihword", "hword", "numhword", "url")  # ts_debug lists their parts after them
SEPARATORS = frozenset(" \t\r\n{}()[]\\,;=*$^!?'\"|`")  # never part of a token the parser builds
PREFILTER_TOKENS = (
    "asciiword",
    "word",
    "numword",
    "uint",
    "int",
    "hword_asciipart",
    "hword_part",
    "hword_numpart",
)
MAX_STEP = 2**62
MAX_LEN = 2**31 - 1
WALK_DENSITY = 0.01  # a word search whose matches are at least this share walks the index
WALK_COUNT_MAX = 5_000  # ... or at least this many (the lower of the two; see _words_walk)
MAX_PROMPT_IDS = 20_000  # prompts matched by a search, passed as a list (above: a subquery)
PREVIEW_CHARS = 160  # head and tail of a completion in a list row
#: the API refuses these empty or repeated (the schema's integers, numbers and enums)
SINGLE_TYPED = (
    "step", "step_min", "step_max", "phase", "truncated", "finish_reason", "group_status",
    "high_reward_wrong", "min_len", "max_len", "ordering", "contains",
)  # fmt: skip
BOOLS = {"true": True, "1": True, "false": False, "0": False}

TS_MATCH = "to_tsvector('simple', {col}) @@ websearch_to_tsquery('simple', %s)"
TS_QUERY = "to_tsvector('simple', {col}) @@ %s::tsquery"
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
        self._prompt_ids: list[int] = []
        self._contains_query: str | None = None
        self._contains_hit: Q | None = None
        self._word_walk = False
        self._word_matches: int | None = None  # the completions' matches, counted up to the walk's threshold
        self._word_prompt_hits = False  # samples may match the words through their prompt
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

    def _build(self, *, search: bool = True):
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
            qs = qs.filter(group_status_q(self.group_status, self.run))
        if self.q and search:
            qs = qs.filter(self._text_q(self.q, words=True))
        if self.contains and search:
            match = self._text_q(self.contains, words=False)
            if match is not None:  # None: every row may match (a scan rechecks them: contains_scan)
                qs = qs.filter(match)
        return qs.order_by(*self.order_by())

    def _text_q(self, text: str, *, words: bool) -> Q | None:
        """The completion, the run's prompt text (RolloutPrompt, looked up first: a run has a few
        thousand prompts) or, for rows logged before prompts were stored once, the row's own prompt."""
        if connection.vendor != "postgresql":
            return (
                Q(completion__icontains=text)
                | Q(prompt_ref__text__icontains=text)
                | Q(prompt_ref__isnull=True, prompt__icontains=text)
            )
        template, value = (TS_MATCH, text) if words else (LIKE_MATCH, like_pattern(text))
        # The run's matching prompts, from the GIN / trigram index of all prompts: a run's own filter
        # would let the planner compute to_tsvector for each of its thousands of prompts instead.
        table = RolloutPrompt._meta.db_table
        sql = (
            f"WITH m AS MATERIALIZED (SELECT id, run_id FROM {table} WHERE "
            + template.format(col="text")
            + ") SELECT id FROM m WHERE run_id = %s LIMIT %s"
        )
        with _plan(_BITMAP), connection.cursor() as cur:
            cur.execute(sql, [value, self.run.pk, MAX_PROMPT_IDS + 1])
            ids = [row[0] for row in cur.fetchall()]
        if words:
            self._prompt_ids = ids
        prompts = RolloutPrompt.objects.filter(run=self.run).filter(
            _raw(template.format(col=_col(RolloutPrompt, "text")), [value])
        )
        if words:
            pending = sample_search.pending_matches(self.run.pk, text)  # decoded (the text is compressed)
            self._word_walk = self._words_walk(text, len(ids), pending)
            match = self._completion_words(text, pending, walk=self._word_walk)
        else:
            # The completions are compressed (webapp.runs.sample_text): SQL cannot ILIKE them. SQL selects
            # the rows that may match, the full-text prefilter's candidates (and every row not indexed
            # yet), or every row when the literal has no word; the paginator's scan decodes and
            # rechecks them in page order (contains_scan).
            prefilter = self.contains_tsquery()
            match = self._completion_candidates(prefilter) if prefilter else None
        hit = None  # the rows whose prompt matches (no recheck)
        if len(ids) > MAX_PROMPT_IDS:
            hit = Q(prompt_ref__in=prompts.values("id"))
        elif ids:
            hit = Q(prompt_ref_id__in=ids)
        if Sample.objects.filter(run=self.run, prompt_ref__isnull=True).exists():
            # legacy rows: their prompt is not indexed (small runs of earlier versions)
            legacy = Q(prompt_ref__isnull=True) & Q(
                _raw(template.format(col=_col(Sample, "prompt")), [value])
            )
            hit = legacy if hit is None else hit | legacy
        if not words:
            self._contains_hit = hit
        else:
            self._word_prompt_hits = hit is not None
        if hit is None:
            return match
        return hit if match is None else match | hit

    # The completions' vectors are in SampleSearch, written after ingest commits (webapp.runs.sample_search);
    # a run's rows still queued there are matched directly, so a search right after ingest finds them.

    def _completion_words(self, text: str, pending: list[int], *, walk: bool) -> Q:
        """Samples whose completion has the words. ``walk`` (many matches, read in step order): each row
        walked looks its vector up by id, so a page stops early; otherwise the run's matches are read
        from the GIN index once (an array of ids: the samples' primary key finds them)."""
        sample_id = _col(Sample, "id")
        tsquery = "websearch_to_tsquery('simple', %s)"
        if walk:
            indexed = (
                f"EXISTS (SELECT 1 FROM {sample_search.SEARCH} x WHERE x.sample_id = {sample_id} "
                f"AND x.tsv @@ {tsquery})"
            )
            if not pending:
                return Q(_raw(indexed, [text]))
            return Q(_raw(f"({indexed} OR {sample_id} = ANY(%s::bigint[]))", [text, pending]))
        indexed = (
            f"SELECT x.sample_id FROM {sample_search.SEARCH} x WHERE x.run_id = %s AND x.tsv @@ {tsquery}"
        )
        sql = f"{sample_id} = ANY(ARRAY({indexed}) || %s::bigint[])"
        return Q(_raw(sql, [self.run.pk, text, pending]))

    def _completion_candidates(self, tsquery: str) -> Q:
        """The substring search's candidates: indexed rows whose vector has the literal's words (a
        tsquery), and every row of the run not indexed yet (contains_scan rechecks them all)."""
        sample_id = _col(Sample, "id")
        indexed = (
            f"SELECT x.sample_id FROM {sample_search.SEARCH} x WHERE x.run_id = %s AND x.tsv @@ %s::tsquery"
        )
        sql = f"{sample_id} = ANY(ARRAY({indexed} UNION ALL {sample_search.pending_ids_sql()}))"
        return Q(_raw(sql, [self.run.pk, tsquery, self.run.pk]))

    def _words_walk(self, text: str, prompt_matches: int, pending: list[int]) -> bool:
        """Whether a word search walks the step index: its matches are at least WALK_DENSITY of the
        samples (the share of the run's prompts that match: their samples all do; or the completions'
        matches, counted in SampleSearch alone up to the threshold: ``_word_matches``). Counted, not
        estimated: the planner's estimate for a word missing from the column's statistics is a fixed
        0.5 %, so a word in 2 % of a 1M run read its ~20,000 matches twice instead of walking. The
        threshold is WALK_DENSITY of the indexed samples (pg_class; every run's), at most WALK_COUNT_MAX:
        at 1M samples (a fixture's words, in-process, warm) the bitmap page of ~9,700 matches took
        155 ms and of ~2,000 37 ms, the walk at 0.7-1.2 % 42-52 ms and at 0.24 % 121 ms (the count
        itself ~12 ms for 10,000)."""
        prompts = RolloutPrompt.objects.filter(run=self.run).count()
        if prompts and prompt_matches / prompts >= WALK_DENSITY:
            return True
        with connection.cursor() as cur:
            cur.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [sample_search.SEARCH])
            row = cur.fetchone()
            total = float(row[0]) if row else 0.0
            if total <= 0:  # never analyzed (a new database): read the matches from the index
                return False
            threshold = max(1, min(math.ceil(WALK_DENSITY * total), WALK_COUNT_MAX))
            cur.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {sample_search.SEARCH} x WHERE x.run_id = %s "
                "AND x.tsv @@ websearch_to_tsquery('simple', %s) LIMIT %s) t",
                [self.run.pk, text, threshold],
            )
            self._word_matches = cur.fetchone()[0] + len(pending)
        return self._word_matches >= threshold

    def contains_tsquery(self) -> str:
        """The full-text prefilter of ``contains`` (a tsquery, "" when the literal has no usable word):
        the literal's words as PostgreSQL's parser reads them (ts_debug), only those the parser reads
        the same wherever they stand: of a word or integer type, right after a separator (whitespace,
        brackets, braces, a backslash, ...). One that ends the literal, or is followed by a character
        that could join it to more (".", "-", "/", ...) is a prefix (``tok:*``). A word the literal starts
        with may be a word's tail: skipped."""
        if self._contains_query is None:
            self._contains_query = ""
            if self.contains and connection.vendor == "postgresql":
                with connection.cursor() as cur:
                    cur.execute("SELECT alias, token, lexemes FROM ts_debug('simple', %s)", [self.contains])
                    tokens = cur.fetchall()
                text, parts, at = self.contains, [], 0
                for alias, token, lexemes in tokens:
                    start = at
                    if alias not in COMPOUND_TOKENS:  # a compound's parts follow it
                        at += len(token)
                    if alias not in PREFILTER_TOKENS or not lexemes or start == 0:
                        continue
                    end = start + len(token)
                    if text[start:end] != token or text[start - 1] not in SEPARATORS:
                        continue
                    lexeme = lexemes[0].replace("\\", "\\\\").replace("'", "''")
                    exact = end < len(text) and text[end] in SEPARATORS
                    parts.append(f"'{lexeme}'" if exact else f"'{lexeme}':*")
                self._contains_query = " & ".join(dict.fromkeys(parts))
        return self._contains_query

    @property
    def bounded_scan(self) -> bool:
        """A substring search of the completions (PostgreSQL): a scan in page order, decoding and
        rechecking the candidates (``contains_scan``), bounded by SCAN_TIMEOUT_MS."""
        return bool(self.contains) and connection.vendor == "postgresql"

    def contains_scan(self, limit: int) -> tuple[list[int], bool]:
        """The ids of the first ``limit`` samples (in page order) that match ``contains``, and whether
        the scan finished (False: it stopped at SCAN_TIMEOUT_MS). The queryset's rows (the candidates,
        every other filter applied, in page order) are read in chunks; a row whose prompt matches is
        taken as is, the others' completions are decoded and the literal looked for case-insensitively
        (Python's str.lower on both sides; ILIKE lowercases the same way for all but a few scripts'
        special cases). Exact: rows are tested in page order, so what the scan returns is the list's
        head. Bounded: a literal whose candidates are many and matches few (or with no word: every row
        of the run is a candidate) stops at the time limit; the page then says so (a 400 on ``contains``
        for the API) unless it filled up first."""
        qs = self.queryset()
        hit = self._contains_hit
        flag = ExpressionWrapper(hit, output_field=BooleanField()) if hit is not None else Value(False)
        rows = qs.annotate(prompt_hit=flag).values_list(
            "id", "prompt_hit", "completion", "completion_z", "completion_dict"
        )
        needle = self.contains.lower()
        deadline = time.monotonic() + SCAN_TIMEOUT_MS / 1000
        walk = self.key == "step" and not self.contains_tsquery()
        found: list[int] = []
        with _plan({**(_WALK if walk else _BITMAP), "statement_timeout": str(SCAN_TIMEOUT_MS)}):
            for pk, prompt_hit, text, frame, dict_id in rows.iterator(chunk_size=SCAN_CHUNK):
                if prompt_hit or needle in sample_text.text_of(text, frame, dict_id).lower():
                    found.append(pk)
                    if len(found) >= limit:
                        return found, True
                if time.monotonic() > deadline:
                    return found, False
        return found, True

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
        """``queryset``: this query's queryset, possibly reading fewer columns (the page's ids)."""
        if not self.search:
            mode = "plain"
        elif self.bounded_scan:
            mode = "scan"
        elif self.q and not self.contains:
            # every order has its index ((run, step, group, member); (run, key nulls last, id)): at 1M
            # samples a common word by -reward walked in ~50 ms, sorted from the bitmap in ~230 ms
            mode = "walk" if self._walks() else "bitmap"
        elif self.key != "step":
            mode = "bitmap"  # the matches are found, then sorted
        else:
            mode = "auto"  # a pattern's frequency is not estimated well: its capped count decides
        return SamplePaginator(
            queryset,
            per_page,
            cap=COUNT_CAP,
            mode=mode,
            count_source=self.queryset(),
            timeout_query=self if self.bounded_scan else None,
            scanner=self.contains_scan if self.bounded_scan else None,
            known_count=self._word_count() if mode == "bitmap" else None,
        )

    def _word_count(self) -> int | None:
        """The exact number of matches of a word search with no other filter, when its walk decision
        counted them all (fewer than the threshold) and no prompt matches: then the count statement
        (every match joined back to its sample) is not needed. None otherwise."""
        others = {k: v for k, v in self.params.items() if k not in ("q", "ordering", "page_size")}
        if not self.q or any(v not in (None, "") for v in others.values()):
            return None
        self.queryset()
        if self._word_walk or self._word_prompt_hits or self._word_matches is None:
            return None
        return self._word_matches

    def _walks(self) -> bool:
        """Whether the word search walks (``_words_walk``, decided when the query was built: the same
        decision chose how the completions are matched)."""
        if connection.vendor != "postgresql":
            return False
        self.queryset()  # looks the prompts up and counts
        return self._word_walk


# How a search's page is planned (session settings for one query). Walk: go down the (run, step, group,
# member) index, test each row (its vector looked up by id), stop when the page is full (cheap when
# matches are many); bitmap scans stay allowed for the vectors' GIN and the not-indexed rows. Bitmap: look
# the words or trigrams up in the GIN index, then sort what matched (cheap when they are few). No JIT:
# its compilation costs more than these queries.
_WALK = {
    "enable_seqscan": "off",
    "enable_sort": "off",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
}
_BITMAP = {
    "enable_seqscan": "off",
    "enable_indexscan": "off",
    "enable_indexonlyscan": "off",
    "work_mem": "32MB",
    "jit": "off",
}


_plan = planner_settings  # one mechanism for both searches (webapp.planner)


class _ScanStopped(Exception):
    """A substring search's scan reached SCAN_TIMEOUT_MS before its page was full."""


class _TimedOut(Exception):
    """A bounded scan ran out of time on a page (not strict): an empty page, the query's errors say why."""


class SamplePaginator(Paginator):
    """Pages of a sample query with no COUNT(*) over a run.

    ``mode``: "walk" (a search with many matches, by step): a page is read with one row more than it
    shows, walking the index; the count is what was seen (``capped``: there are more, "50+").
    Otherwise the count stops at ``cap`` (a little past the requested page, then "2,000+"), read from
    ``count_source`` (the bare filter); a first page that is not full is its own count (a selective
    filter is read once); "bitmap" reads a search's count and page from the GIN / trigram index;
    "auto" counts that way first, then walks when the count reached the cap."""

    def __init__(
        self,
        object_list,
        per_page,
        *,
        cap: int,
        mode: str,
        count_source,
        timeout_query=None,
        scanner=None,
        known_count: int | None = None,
    ):
        super().__init__(object_list, per_page)
        self.scanner = scanner  # "scan": SampleQuery.contains_scan
        self.timeout_query = timeout_query  # a bounded scan: its SampleQuery (strict: a 400; else its errors)
        self.cap = cap
        self.mode = mode
        self.count_source = count_source
        self.capped = False
        if (
            known_count is not None
        ):  # counted already (a word search's walk decision): as the capped count says
            self.__dict__["count"] = min(known_count, cap + 1)
            self.capped = known_count > cap

    @property
    def shown_count(self) -> int:
        return self.count - 1 if self.capped else self.count

    def _reads_page_first(self, number: int) -> bool:
        return self.mode in ("walk", "scan") or (
            self.mode == "plain" and number == 1 and "count" not in self.__dict__
        )

    def validate_number(self, number):
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("that page number is not an integer") from None
        if number < 1:
            raise EmptyPage("that page number is less than 1")
        if self._reads_page_first(number):
            return number
        if number * self.per_page > self.cap:  # a page deep in the list raises the cap
            self.cap = number * self.per_page
            if self.capped:
                self.capped = False
                self.__dict__.pop("count", None)
                self.__dict__.pop("num_pages", None)
        return super().validate_number(number)

    def get_page(self, number):
        try:
            return super().get_page(number)
        except EmptyPage:
            return self.page(1)

    def _page_plan(self) -> dict | None:
        if self.mode == "walk" or (self.mode == "auto" and self.capped):
            plan = _WALK
        else:
            plan = _BITMAP if self.mode in ("bitmap", "auto") else None
        if self.timeout_query is not None:
            plan = {**(plan or {}), "statement_timeout": str(SCAN_TIMEOUT_MS)}
        return plan

    @contextlib.contextmanager
    def _bounded(self) -> Iterator[None]:
        """A bounded scan past SCAN_TIMEOUT_MS: ServiceError on ``contains`` (the API: a 400), or on the
        pages the query's errors and no rows."""
        if self.timeout_query is None:
            yield
            return
        try:
            yield
        except (OperationalError, _ScanStopped) as exc:
            if isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) != "57014":
                raise  # not query_canceled
            if self.timeout_query.strict:
                raise ServiceError(SCAN_TIMEOUT_MESSAGE, {"contains": [SCAN_TIMEOUT_MESSAGE]}) from None
            self.timeout_query.errors["contains"] = SCAN_TIMEOUT_MESSAGE
            raise _TimedOut from None

    def page(self, number):
        try:
            return self._page(number)
        except _TimedOut:
            self.__dict__["count"] = 0
            self.capped = False
            return self._get_page([], 1, self)

    def _scan_page(self, number):
        """A substring search's page: the scan finds the matches up to one past the page (walk's
        counting: what was seen, "50+")."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        with self._bounded():
            ids, finished = self.scanner(bottom + self.per_page + 1)
            rows = ids[bottom:]
            if not finished and len(rows) < self.per_page:
                raise _ScanStopped
        if not rows and number > 1:
            raise EmptyPage("that page contains no results")
        more = len(rows) > self.per_page or not finished
        self.__dict__["count"] = bottom + min(len(rows), self.per_page) + (1 if more else 0)
        self.capped = more
        shown = rows[: self.per_page]
        # the scan's ids passed every filter: read them by primary key alone (the queryset's filter would
        # look the candidates up in the GIN index again: ~30 ms at 1M samples), with its columns
        by_id = {}
        if shown:
            rows_qs = self.object_list.model._default_manager.filter(pk__in=shown)
            rows_qs.query.deferred_loading = self.object_list.query.deferred_loading
            by_id = {o.pk: o for o in rows_qs}
        return self._get_page([by_id[pk] for pk in shown if pk in by_id], number, self)

    def _page(self, number):
        if self.mode == "scan":
            return self._scan_page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if self._reads_page_first(number):
            with self._bounded(), _plan(self._page_plan()):
                rows = list(self.object_list[bottom : bottom + self.per_page + 1])
            if not rows and number > 1:
                raise EmptyPage("that page contains no results")
            more = len(rows) > self.per_page
            if self.mode == "walk" or not more:
                self.__dict__["count"] = bottom + len(rows)
                self.capped = more
            return self._get_page(rows[: self.per_page], number, self)
        top = min(bottom + self.per_page, self.count)
        with self._bounded(), _plan(self._page_plan()):
            rows = list(self.object_list[bottom:top])
        return self._get_page(rows, number, self)

    @cached_property
    def count(self) -> int:
        if self.mode == "scan":
            try:
                with self._bounded():
                    ids, finished = self.scanner(self.cap + 1)
            except _TimedOut:
                return 0
            self.capped = len(ids) > self.cap or not finished
            return min(len(ids), self.cap + 1) if finished else len(ids) + 1
        plan = _BITMAP if self.mode in ("bitmap", "auto") else None
        if self.timeout_query is not None:
            plan = {**(plan or {}), "statement_timeout": str(SCAN_TIMEOUT_MS)}
        try:
            with self._bounded(), _plan(plan):
                n = self.count_source.order_by()[: self.cap + 1].count()
        except _TimedOut:
            n = 0
        self.capped = n > self.cap
        return n


# --- groups -------------------------------------------------------------------------------------------


def _members_of_outer():
    return Sample.objects.filter(
        run_id=OuterRef("run_id"),
        step=OuterRef("step"),
        phase=OuterRef("phase"),
        group_index=OuterRef("group_index"),
    )


def group_status_q(status: str, run: Run | None = None) -> Q:
    """Samples whose group has this status (see the module's docstring): the column (the trainer's
    reading or ingest's; index (run, group_status, step)). Grouped rows of ``run`` without one (not
    since migration 0012; None: assume some) are derived from their members' rewards and verdicts."""
    stored = FILTERED_STATUSES if status == "zero_variance" else (status,)
    column = Q(group_status__in=list(stored))
    if (
        run is not None
        and not Sample.objects.filter(run=run, group_status="", group_index__isnull=False).exists()
    ):
        return column
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
    return column | (Q(group_status="", group_index__isnull=False) & derived)


def derive_group_status(members) -> str:
    """kept | zero_variance | solved_all | unsolved_all: the reading stored with the group (the trainer's,
    or ingest's: extra["group_status"]) wins; otherwise webapp.runs.samples.group_status."""
    for m in members:
        if getattr(m, "group_status", "") in GROUP_STATUSES:
            return m.group_status
        sent = m.extra.get("group_status") if isinstance(m.extra, dict) else None
        if sent in GROUP_STATUSES:
            return sent
    return group_status(members)


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


def list_rows(ids: list[int]) -> list:
    """The rows of a page (its sample ids, in order), cheaply: no full prompt texts, the completion's
    head and tail (decoded here: the text is compressed), the prompt's excerpt and the expected answer, and whether per-token arrays exist.
    (Read apart from the page's ids, so that a sort never carries these columns through every row.)"""
    rows = (
        Sample.objects.filter(pk__in=ids)
        .select_related("prompt_ref")
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
            "rewards",
            "prompt_ref__id",
            "prompt_ref__expected_answer",
            "prompt_ref__data_source",
            "completion",  # a compressed frame (~700 bytes for 2 KB), decoded on load (Sample.from_db)
            "completion_z",
            "completion_dict",
        )  # fmt: skip
        .annotate(
            prompt_excerpt=Substr("prompt", 1, PREVIEW_CHARS),
            ref_excerpt=Substr("prompt_ref__text", 1, PREVIEW_CHARS),
            has_tokens=has_tokens_expr(),
        )
    )
    by_id = {}
    for r in rows:
        text = r.completion
        r.head, r.tail, r.completion_chars = text[:PREVIEW_CHARS], text[-PREVIEW_CHARS:], len(text)
        by_id[r.pk] = r
    return [by_id[i] for i in ids if i in by_id]


def full_rows(ids: list[int]) -> list:
    """Whole samples of a page (the API's rows), in the page's order, with their prompt and has_tokens."""
    rows = (
        Sample.objects.filter(pk__in=ids).select_related("prompt_ref").annotate(has_tokens=has_tokens_expr())
    )
    by_id = {r.pk: r for r in rows}
    return [by_id[i] for i in ids if i in by_id]


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
