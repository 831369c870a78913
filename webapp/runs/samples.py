"""The RL sample record: ingest (``samples_record``), each group's status, and the prompt text of a row.

One sample is one rollout. What trainers, the client and ``POST /api/runs/{id}/samples/`` send, one
dict per sample (all but ``prompt`` and ``completion`` optional):

    step, prompt, completion, reward (total), advantage, verdict, length (tokens), truncated,
    group_index (which group of the step, 0..G-1), member_index (its place in the group, 0..n-1),
    finish_reason ("stop" | "length" | "error"), rewards ({reward function: value}),
    extracted_answer, expected_answer, data_source, phase ("train" | "eval"), checkpoint_step,
    attempt, group_status ("kept" | "zero_variance" | "solved_all" | "unsolved_all"),
    tokens ({"offsets": [int], "logprobs": [float], "entropies": [float], "engine_logprobs": [float]}),
    extra ({...}), client_key (str)

Keys outside this list go into ``extra``. Stored:

- the prompt once per run (``RolloutPrompt``, found by the sha256 of its text; its expected answer
  and data source are the first ones sent for it); the sample references it (``prompt_ref``) and
  leaves ``Sample.prompt`` empty. Rows stored before (and not migrated) keep the text in ``prompt``:
  read it with ``prompt_text(sample)``;
- ``attempt``: the run's current attempt when the sample does not say;
- ``tokens`` into ``SampleTokens``: offsets as int32, the rest as float16 (little-endian; values
  clipped to float16's finite range, null stored as NaN); every array as long as ``offsets``;
- per (prompt, step, phase) aggregates (``PromptStepStat``: n, correct, truncated, reward sums,
  min, max) added up in the same transaction (INSERT ... ON CONFLICT DO UPDATE), and the prompt's
  ``first_solved_step`` (the lowest step with a correct rollout, train or eval);
- ``extra["group_status"]`` on every sample with a ``group_index``: the status sent with the group,
  or ``group_status(members)`` of all its members stored so far (re-derived, and written on the
  members stored before, when a later batch adds members to a group and sends no status).

- the completion as a zstd frame with the run's dictionary (PostgreSQL; webapp.runs.sample_text),
  ``Sample.completion`` left empty;
- the completions' full-text vectors after commit, not by the insert (webapp.runs.sample_search): the
  batch queues itself (one row) in its transaction; searches recheck queued rows until indexed.

A batch is stored atomically: all of it or nothing. It is idempotent by ``client_key``: a sample
whose key the run already has, or had before retention deleted it (``SampleKeptKey``), is skipped;
so is a later duplicate of a key within the batch. Non-finite rewards and advantages are stored as
null (JSON and jsonb have no NaN); the API refuses NaN literals at the parser, the worker's sink
converts them.

Strictness: the API's serializer (webapp.api.serializers.SampleInSerializer) refuses bad input with
a 400 naming the row and the field; ``samples_record`` checks the same rules and raises
``SampleError`` (a ServiceError: also a 400) naming them. The worker's sink (``lenient=True``) never
fails a trainer over a sample: a bad optional field is dropped into ``extra["invalid"]`` instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Min, Q

from webapp.errors import ServiceError
from webapp.runs import sample_search, sample_text
from webapp.runs.models import (
    GROUP_STATUSES,
    SAMPLE_FINISH_REASONS,
    SAMPLE_PHASES,
    PromptStepStat,
    RolloutPrompt,
    Run,
    Sample,
    SampleKeptKey,
    SampleTokens,
)

REWARD_TOLERANCE = 1e-9  # rewards closer than this count as equal
TOKEN_ARRAYS = ("logprobs", "entropies", "engine_logprobs")
FLOAT16_MAX = float(np.finfo(np.float16).max)
MAX_INT32 = 2**31 - 1
MAX_STEP = 2**62
KNOWN = {
    "step", "prompt", "completion", "reward", "advantage", "verdict", "length", "truncated",
    "group_index", "member_index", "finish_reason", "rewards", "extracted_answer", "expected_answer",
    "data_source", "phase", "checkpoint_step", "attempt", "group_status", "tokens", "extra", "client_key",
}  # fmt: skip
NOT_NULL = (
    "step", "prompt", "completion", "verdict", "length", "truncated", "finish_reason", "rewards", "extracted_answer",
    "expected_answer", "data_source", "phase", "group_status", "tokens", "extra",
)  # fmt: skip
# pg_advisory_xact_lock class id of a run's samples: ingest holds it shared, retention exclusive, so a
# re-sent key can never slip in between retention keeping a key and deleting its row.
LOCK_CLASS = 14_001


class SampleError(ServiceError):
    """Bad sample input: names the row (its position in the batch) and the field."""

    def __init__(self, row: int, field: str, message: str):
        self.row, self.field, self.reason = row, field, message
        super().__init__(f"sample {row}: {field}: {message}", {f"samples.{row}.{field}": [message]})


# --- readers ---------------------------------------------------------------------------------------------
def prompt_text(sample: Sample) -> str:
    """The prompt of a row: its RolloutPrompt's text, or the text a legacy row kept in ``prompt``."""
    return sample.prompt_ref.text if sample.prompt_ref_id else sample.prompt


def group_status(members: Sequence[Any]) -> str:
    """Why a group (the n rollouts of one prompt at one step) was kept or filtered, from its
    members' ``reward`` and ``verdict`` (objects or dicts):

    1. the rewards of the members that carry one differ (max - min > 1e-9): "kept" (the advantages
       are not all zero, the group carries a learning signal);
    2. otherwise, when every member has a verdict: all "correct" -> "solved_all" (n/n), none
       "correct" -> "unsolved_all" (0/n);
    3. otherwise "zero_variance" when any member carries a reward (all equal), else "kept" (no
       reward and no complete verdicts: nothing says it was filtered)."""

    def get(m, name):
        return m.get(name) if isinstance(m, Mapping) else getattr(m, name)

    rewards = [r for m in members if (r := get(m, "reward")) is not None]
    if rewards and max(rewards) - min(rewards) > REWARD_TOLERANCE:
        return "kept"
    verdicts = [get(m, "verdict") or "" for m in members]
    if verdicts and all(verdicts):
        correct = sum(v == "correct" for v in verdicts)
        if correct == len(verdicts):
            return "solved_all"
        if correct == 0:
            return "unsolved_all"
    return "zero_variance" if rewards else "kept"


def decode_tokens(tokens: SampleTokens) -> dict[str, list]:
    """The stored arrays as lists (NaN as None); absent arrays are omitted."""
    out: dict[str, list] = {"offsets": np.frombuffer(bytes(tokens.offsets), dtype="<i4").tolist()}
    for name in TOKEN_ARRAYS:
        blob = getattr(tokens, name)
        if blob is not None:
            values = np.frombuffer(bytes(blob), dtype="<f2").astype(np.float64)
            out[name] = [None if math.isnan(v) else v for v in values.tolist()]
    return out


# --- input ------------------------------------------------------------------------------------------------
def _finite(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# isinstance targets built once (a union written in the call is built on every call: normalize runs
# these a few times per sample, 1,000s of samples per batch); plain int and float tested first
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_INT_TYPES = (int, np.integer)
_FLOAT_TYPES = (float, np.floating)


def _is_number(value) -> bool:
    t = type(value)
    if t is float or t is int:
        return True
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def _is_int(value) -> bool:
    t = type(value)
    if t is int:
        return True
    if t is float:
        return value.is_integer()
    return (isinstance(value, _INT_TYPES) and not isinstance(value, bool)) or (
        isinstance(value, _FLOAT_TYPES) and float(value).is_integer()
    )


def encode_tokens(tokens: Mapping[str, Any], completion: str) -> dict[str, bytes | None]:
    """SampleTokens' columns from lists; raises ValueError naming the array (``tokens.<name>``)."""
    if not isinstance(tokens, Mapping):
        raise ValueError("tokens: must be an object")
    unknown = set(tokens) - {"offsets", *TOKEN_ARRAYS}
    if unknown:
        raise ValueError(
            f"tokens.{sorted(unknown)[0]}: unknown array; one of offsets, {', '.join(TOKEN_ARRAYS)}"
        )
    offsets = tokens.get("offsets")
    if offsets is None:
        raise ValueError("tokens.offsets: required with per-token arrays")
    if not isinstance(offsets, list | tuple | np.ndarray) or not all(_is_int(o) for o in offsets):
        raise ValueError("tokens.offsets: must be a list of integers")
    off = np.asarray(offsets, dtype=np.int64)
    if len(off) and (off.min() < 0 or off.max() > len(completion)):
        raise ValueError(f"tokens.offsets: each must be within the completion (0..{len(completion)})")
    if len(off) > 1 and np.any(np.diff(off) < 0):
        raise ValueError("tokens.offsets: must not decrease")
    out: dict[str, bytes | None] = {"offsets": off.astype("<i4").tobytes()}
    for name in TOKEN_ARRAYS:
        values = tokens.get(name)
        if values is None:
            out[name] = None
            continue
        if not isinstance(values, list | tuple | np.ndarray) or not all(
            v is None or _is_number(v) for v in values
        ):
            raise ValueError(f"tokens.{name}: must be a list of numbers (null for none)")
        if len(values) != len(off):
            raise ValueError(f"tokens.{name}: {len(values)} values for {len(off)} tokens (offsets)")
        arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        arr = np.clip(arr, -FLOAT16_MAX, FLOAT16_MAX)  # +-inf too; NaN stays NaN
        out[name] = arr.astype("<f2").tobytes()
    return out


def _text(value, row: int, field: str, lenient: bool, *, limit: int | None = None) -> str:
    if not isinstance(value, str):
        if not lenient:
            raise SampleError(row, field, "must be a string")
        value = "" if value is None else str(value)
    if "\x00" in value:
        if not lenient:
            raise SampleError(row, field, "must not contain NUL characters")
        value = value.replace("\x00", "")
    if limit is not None and len(value) > limit:
        if not lenient:
            raise SampleError(row, field, f"at most {limit} characters")
        value = value[:limit]
    return value


def normalize(
    sample: Mapping[str, Any],
    row: int,
    *,
    step: int | None = None,
    client_key: str | None = None,
    lenient: bool = False,
) -> dict[str, Any]:
    """One sample dict as the record's fields. ``step``/``client_key`` given here win over the
    dict's (the sink's; a trainer's own ``step`` key, e.g. DAPO's step text, then goes into extra)."""
    if not isinstance(sample, Mapping):
        raise SampleError(row, "__all__", "must be an object")
    extra = sample.get("extra")
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        if not lenient:
            raise SampleError(row, "extra", "must be an object")
        extra = {"extra": extra}
    extra = dict(extra)
    invalid: dict[str, str] = {}

    def bad(field: str, message: str, value: Any = None):
        if not lenient:
            raise SampleError(row, field, message)
        invalid[field] = message
        if value is not None and field not in extra:
            extra[field] = value if isinstance(value, str | int | float | bool) else repr(value)[:500]

    if not lenient:  # what the API documents as non-null (webapp.api.serializers.SampleInSerializer)
        for name in NOT_NULL:
            if name in sample and sample[name] is None:
                raise SampleError(row, name, "must not be null")
    own = {"step"} if step is None else set()
    if client_key is None:
        own.add("client_key")
    for key, value in sample.items():
        if key not in KNOWN or (key in ("step", "client_key") and key not in own):
            extra.setdefault(str(key), value)
    if step is None:
        step = sample.get("step")
        if not _is_int(step) or not 0 <= int(step) <= MAX_STEP:
            raise SampleError(row, "step", f"an integer from 0 to {MAX_STEP}")
    if client_key is None and sample.get("client_key") is not None:
        client_key = _text(sample["client_key"], row, "client_key", False, limit=100)

    if "prompt" not in sample and not lenient:
        raise SampleError(row, "prompt", "required")
    if "completion" not in sample and not lenient:
        raise SampleError(row, "completion", "required")
    completion = _text(sample.get("completion", ""), row, "completion", lenient)
    out: dict[str, Any] = {
        "step": int(step),
        "prompt": _text(sample.get("prompt", ""), row, "prompt", lenient),
        "completion": completion,
        "client_key": client_key,
    }
    for name in ("reward", "advantage"):
        value = sample.get(name)
        if value is not None and not _is_number(value):
            bad(name, "must be a number or null", value)
            value = None
        out[name] = _finite(value)
    verdict = sample.get("verdict") or ""
    out["verdict"] = _text(verdict, row, "verdict", lenient, limit=32)
    length = sample.get("length")
    if length is None:
        length = len(completion)
    elif not _is_int(length) or not 0 <= int(length) <= MAX_INT32:
        bad("length", f"an integer from 0 to {MAX_INT32}", length)
        length = len(completion)
    out["length"] = int(length)
    truncated = sample.get("truncated", False)
    if type(truncated) is not bool and not isinstance(truncated, np.bool_):
        bad("truncated", "must be true or false", truncated)
        truncated = False
    out["truncated"] = bool(truncated)
    for name in ("group_index", "member_index", "attempt"):
        value = sample.get(name)
        if value is not None and (not _is_int(value) or not 0 <= int(value) <= MAX_INT32):
            bad(name, f"an integer from 0 to {MAX_INT32}", value)
            value = None
        out[name] = None if value is None else int(value)
    value = sample.get("checkpoint_step")
    if value is not None and (not _is_int(value) or not 0 <= int(value) <= MAX_STEP):
        bad("checkpoint_step", f"an integer from 0 to {MAX_STEP}", value)
        value = None
    out["checkpoint_step"] = None if value is None else int(value)
    finish = sample.get("finish_reason", "")
    if lenient and not finish:
        finish = ""
    elif "finish_reason" in sample and finish not in SAMPLE_FINISH_REASONS:
        bad("finish_reason", f"one of {', '.join(SAMPLE_FINISH_REASONS)}", finish)
        finish = ""
    out["finish_reason"] = finish
    phase = sample.get("phase", "train")
    if lenient and not phase:
        phase = "train"
    if phase not in SAMPLE_PHASES:
        bad("phase", f"one of {', '.join(SAMPLE_PHASES)}", phase)
        phase = "train"
    out["phase"] = phase
    status = sample.get("group_status")
    if status is not None and status not in GROUP_STATUSES:
        bad("group_status", f"one of {', '.join(GROUP_STATUSES)}", status)
        status = None
    out["group_status"] = status
    rewards = sample.get("rewards")
    clean: dict[str, float | None] = {}
    if rewards is not None:
        if not isinstance(rewards, Mapping):
            bad("rewards", "must be an object of reward function name -> number", rewards)
        else:
            for name, value in rewards.items():
                if value is not None and not _is_number(value):
                    bad(f"rewards.{name}", "must be a number or null", value)
                    continue
                clean[_text(str(name), row, "rewards", lenient, limit=200)] = _finite(value)
    out["rewards"] = clean
    out["extracted_answer"] = _text(sample.get("extracted_answer") or "", row, "extracted_answer", lenient)
    out["expected_answer"] = _text(sample.get("expected_answer") or "", row, "expected_answer", lenient)
    out["data_source"] = _text(sample.get("data_source") or "", row, "data_source", lenient, limit=100)
    tokens = sample.get("tokens")
    out["tokens"] = None
    if tokens is not None:
        try:
            out["tokens"] = encode_tokens(tokens, completion)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            bad(field, message)
    if lenient:  # a trainer's own values: numpy scalars and arrays, NaN (jsonb holds neither)
        extra = _jsonable(extra)
    if invalid:
        extra["invalid"] = invalid
    if status is not None:
        extra["group_status"] = status
    out["extra"] = extra
    return out


def _jsonable(value, depth: int = 0):
    if isinstance(value, bool | None | int | str):
        return value.replace("\x00", "") if isinstance(value, str) else value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if depth > 30:
        return repr(value)[:200]
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v, depth + 1) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return str(value)


# --- ingest -----------------------------------------------------------------------------------------------
def samples_record(
    run: Run | int, samples: Sequence[Mapping[str, Any]], *, attempt: int | None = None
) -> int:
    """Store a batch of sample dicts (see the module docstring) atomically; returns how many were
    new. Raises SampleError (400) naming the first bad row and field."""
    rows = [normalize(s, i) for i, s in enumerate(samples)]
    return record_rows(run, rows, attempt=attempt)


def record_rows(run: Run | int, rows: list[dict[str, Any]], *, attempt: int | None = None) -> int:
    """Store rows made by ``normalize`` atomically (a savepoint inside a caller's transaction).
    A concurrent batch with the same client keys can make the insert conflict: then it is retried
    once the other committed, and its keys are skipped."""
    from webapp.runs import retention

    if not rows:
        return 0
    if isinstance(run, Run):
        run_id, config, current = run.pk, run.config, run.attempt
    else:
        run_id = run
        current, config = Run.objects.values_list("attempt", "config").get(pk=run_id)
    if attempt is None:
        attempt = current
    policy = retention.sample_policy_of(config)
    for tries in range(3):
        try:
            with transaction.atomic():
                before = None
                if policy is not None:  # for retention's pass after the batch (webapp.runs.retention)
                    before = Sample.objects.filter(run_id=run_id).aggregate(m=Max("step"))["m"]
                written = _record(run_id, rows, attempt)
                if policy is not None and written:
                    newest = max(r["step"] for r in rows)
                    transaction.on_commit(
                        functools.partial(
                            retention.samples_retention_after_ingest, run_id, before, newest, config
                        )
                    )
                return written
        except IntegrityError:
            if tries == 2:
                raise
    return 0  # not reached


def _lock_shared(run_id: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [LOCK_CLASS, run_id % 2**31])


def _record(run_id: int, rows: list[dict[str, Any]], attempt: int) -> int:
    _lock_shared(run_id)
    # idempotency: keys stored, kept after retention, or repeated within the batch
    keys = {r["client_key"] for r in rows if r["client_key"] is not None}
    seen: set[str] = set()
    if keys and connection.vendor == "postgresql":  # one statement, the keys as one array parameter
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT client_key FROM {Sample._meta.db_table} WHERE run_id = %s AND client_key = ANY(%s) "
                f"UNION ALL SELECT client_key FROM {SampleKeptKey._meta.db_table} "
                "WHERE run_id = %s AND client_key = ANY(%s)",
                [run_id, sorted(keys), run_id, sorted(keys)],
            )
            seen.update(k for (k,) in cur.fetchall())
    elif keys:
        for chunk in _chunks(sorted(keys), 5000):
            seen.update(
                Sample.objects.filter(run_id=run_id, client_key__in=chunk)
                .order_by()
                .values_list("client_key", flat=True)
            )
            seen.update(
                SampleKeptKey.objects.filter(run_id=run_id, client_key__in=chunk)
                .order_by()
                .values_list("client_key", flat=True)
            )
    todo = []
    for r in rows:
        key = r["client_key"]
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        todo.append(r)
    if not todo:
        return 0

    prompts = _prompts(run_id, todo)
    statuses = _group_statuses(run_id, todo)
    ids = _insert(run_id, todo, prompts, statuses, attempt)
    sample_search.queue_batch(run_id, ids)  # the full-text vectors are written after commit
    tokens = [
        SampleTokens(sample_id=pk, **r["tokens"]) for r, pk in zip(todo, ids, strict=True) if r["tokens"]
    ]
    if tokens:
        SampleTokens.objects.bulk_create(tokens, batch_size=1000)
    _stats_add(run_id, todo, prompts)
    return len(todo)


COPY_COLUMNS = (
    "id", "run_id", "step", "prompt", "prompt_ref_id", "completion", "completion_z", "completion_dict",
    "reward", "advantage", "verdict",
    "length", "truncated", "group_index", "member_index", "finish_reason", "rewards", "extracted_answer",
    "phase", "checkpoint_step", "attempt", "data_source", "group_status", "extra", "client_key",
)  # fmt: skip


def _insert(
    run_id: int, rows: list[dict[str, Any]], prompts: dict[str, list], statuses: list[str], attempt: int
) -> list[int]:
    """The rows; returns their ids. PostgreSQL: ids drawn from the table's sequence, then one COPY
    (about 4x faster than a multi-row INSERT of 1,000 2 KB rows), each row built as one tuple from the
    normalized dict (no model instances), the completion as a zstd frame (webapp.runs.sample_text);
    elsewhere bulk_create, the completion as text."""
    if connection.vendor != "postgresql":
        objs = [
            Sample(
                run_id=run_id,
                step=r["step"],
                prompt="",
                prompt_ref_id=prompts[r["digest"]][0],
                completion=r["completion"],
                reward=r["reward"],
                advantage=r["advantage"],
                verdict=r["verdict"],
                length=r["length"],
                truncated=r["truncated"],
                group_index=r["group_index"],
                member_index=r["member_index"],
                finish_reason=r["finish_reason"],
                rewards=r["rewards"],
                extracted_answer=r["extracted_answer"],
                phase=r["phase"],
                checkpoint_step=r["checkpoint_step"],
                attempt=attempt if r["attempt"] is None else r["attempt"],
                data_source=r["data_source"],
                group_status=status,
                extra=r["extra"],
                client_key=r["client_key"],
            )
            for r, status in zip(rows, statuses, strict=True)
        ]
        Sample.objects.bulk_create(objs, batch_size=1000)
        return [o.pk for o in objs]
    table = Sample._meta.db_table
    dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
    dict_id, frames = sample_text.compress(run_id, [r["completion"] for r in rows])
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)",
            [len(rows)],
        )
        ids = [pk for (pk,) in cur.fetchall()]
        # wrapped: a duplicate key from a concurrent batch is Django's IntegrityError (record_rows retries)
        with (
            connection.wrap_database_errors,
            cur.cursor.copy(f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy,
        ):
            write = copy.write_row
            for pk, r, status, frame in zip(ids, rows, statuses, frames, strict=True):
                write(
                    (
                        pk, run_id, r["step"], "", prompts[r["digest"]][0], "", frame, dict_id, r["reward"],
                        r["advantage"], r["verdict"], r["length"], r["truncated"], r["group_index"],
                        r["member_index"], r["finish_reason"], dumps(r["rewards"]), r["extracted_answer"],
                        r["phase"], r["checkpoint_step"], attempt if r["attempt"] is None else r["attempt"],
                        r["data_source"], status, dumps(r["extra"]), r["client_key"],
                    )
                )  # fmt: skip
    return ids


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _prompts(run_id: int, rows: list[dict[str, Any]]) -> dict[str, list]:
    """digest -> [id, first_solved_step] of every prompt of the rows, created when new (sets
    ``row["digest"]``). A stored prompt without an expected answer or data source takes the first
    one a row sends."""
    wanted: dict[str, dict[str, Any]] = {}
    for r in rows:
        digest = r["digest"] = hashlib.sha256(r["prompt"].encode("utf-8", "surrogatepass")).hexdigest()
        first = wanted.get(digest)
        if first is None:
            wanted[digest] = {
                "text": r["prompt"],
                "expected_answer": r["expected_answer"],
                "data_source": r["data_source"],
            }
        else:
            for name in ("expected_answer", "data_source"):
                if not first[name] and r[name]:
                    first[name] = r[name]
    found: dict[str, list] = {}
    fill: list[tuple[int, dict[str, str]]] = []
    for chunk in _chunks(sorted(wanted), 2000):
        for pk, digest, solved, expected, source in (
            RolloutPrompt.objects.filter(run_id=run_id, digest__in=chunk)
            .order_by()
            .values_list("id", "digest", "first_solved_step", "expected_answer", "data_source")
        ):
            found[digest] = [pk, solved]
            want = wanted[digest]
            update = {
                name: want[name]
                for name, have in (("expected_answer", expected), ("data_source", source))
                if not have and want[name]
            }
            if update:
                fill.append((pk, update))
    missing = sorted(d for d in wanted if d not in found)  # one order: concurrent batches never deadlock
    if missing:
        RolloutPrompt.objects.bulk_create(
            [RolloutPrompt(run_id=run_id, digest=d, **wanted[d]) for d in missing],
            batch_size=1000,
            ignore_conflicts=True,
        )
        for chunk in _chunks(missing, 2000):
            for pk, digest, solved in (
                RolloutPrompt.objects.filter(run_id=run_id, digest__in=chunk)
                .order_by()
                .values_list("id", "digest", "first_solved_step")
            ):
                found[digest] = [pk, solved]
    for pk, update in fill:
        RolloutPrompt.objects.filter(pk=pk).update(**update)
    return found


def _group_statuses(run_id: int, rows: list[dict[str, Any]]) -> list[str]:
    """Each new row's group status ("" outside a group; also set in its extra["group_status"]), and
    the stored members of the batch's groups re-derived (module docstring): their column and extra
    rewritten by one UPDATE where the status changed."""
    out = [""] * len(rows)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r["group_index"] is not None:
            groups[(r["phase"], r["step"], r["group_index"])].append(i)
    if not groups:
        return out
    derive = {}
    for key, idx in groups.items():
        sent = next((rows[i]["group_status"] for i in idx if rows[i]["group_status"]), None)
        if sent:
            for i in idx:
                out[i] = sent
        else:
            derive[key] = idx
    if derive:
        stored: dict[tuple, list[tuple]] = defaultdict(list)
        steps = sorted({k[1] for k in derive})
        indices = sorted({k[2] for k in derive})
        for chunk in _chunks(steps, 1000):
            for pk, phase, step, index, reward, verdict, status in (
                Sample.objects.filter(
                    run_id=run_id,
                    step__in=chunk,
                    group_index__in=indices,
                    phase__in=sorted({k[0] for k in derive}),
                )
                .order_by()
                .values_list("id", "phase", "step", "group_index", "reward", "verdict", "group_status")
            ):
                key = (phase, step, index)
                if key in derive:
                    stored[key].append((pk, reward, verdict, status))
        changed: dict[str, list[int]] = defaultdict(list)
        for key, idx in derive.items():
            old = stored.get(key, [])
            members = [rows[i] for i in idx] + [{"reward": m[1], "verdict": m[2]} for m in old]
            status = group_status(members)
            for i in idx:
                out[i] = status
            for pk, _reward, _verdict, was in old:
                if was != status:
                    changed[status].append(pk)
        _restatus(changed)
    for r, status in zip(rows, out, strict=True):
        if status:
            r["extra"] = {**r["extra"], "group_status": status}
    return out


def _restatus(changed: dict[str, list[int]]) -> None:
    """Stored members whose group status changed: the column and extra["group_status"]."""
    for status, ids in sorted(changed.items()):
        for chunk in _chunks(sorted(ids), 5000):
            if connection.vendor == "postgresql":
                with connection.cursor() as cur:
                    cur.execute(
                        f"UPDATE {Sample._meta.db_table} SET group_status = %s, "
                        "extra = jsonb_set(extra, '{group_status}', to_jsonb(%s::text)) WHERE id = ANY(%s)",
                        [status, status, chunk],
                    )
                continue
            objs = list(Sample.objects.filter(pk__in=chunk).only("id", "extra"))
            for o in objs:
                o.group_status = status
                o.extra = {**(o.extra if isinstance(o.extra, dict) else {}), "group_status": status}
            Sample.objects.bulk_update(objs, ["group_status", "extra"], batch_size=500)


def _stats_add(run_id: int, rows: list[dict[str, Any]], prompts: dict[str, list]) -> None:
    """Add the rows to PromptStepStat (PostgreSQL: one upsert of column arrays; elsewhere one per 500
    keys; in key order so concurrent batches lock rows in the same order) and move prompts' first_solved_step earlier where they solved."""
    acc: dict[tuple, list] = {}
    for r in rows:
        key = (prompts[r["digest"]][0], r["step"], r["phase"])
        a = acc.get(key)
        if a is None:
            a = acc[key] = [0, 0, 0, 0, 0.0, 0.0, None, None]
        a[0] += 1
        a[1] += r["verdict"] == "correct"
        a[2] += r["truncated"]
        reward = r["reward"]
        if reward is not None:
            a[3] += 1
            a[4] += reward
            a[5] += reward * reward
            a[6] = reward if a[6] is None else min(a[6], reward)
            a[7] = reward if a[7] is None else max(a[7], reward)
    table = PromptStepStat._meta.db_table
    cols = "run_id, prompt_id, step, phase, n, correct, truncated, n_rewarded, reward_sum, reward_sq_sum, reward_min, reward_max"

    def least(col, cmp):
        return (
            f"CASE WHEN {table}.{col} IS NULL THEN EXCLUDED.{col} WHEN EXCLUDED.{col} IS NULL THEN {table}.{col} "
            f"WHEN EXCLUDED.{col} {cmp} {table}.{col} THEN EXCLUDED.{col} ELSE {table}.{col} END"
        )

    adds = ", ".join(
        f"{c} = {table}.{c} + EXCLUDED.{c}"
        for c in ("n", "correct", "truncated", "n_rewarded", "reward_sum", "reward_sq_sum")
    )
    items = sorted(acc.items())
    conflict = (
        f"ON CONFLICT (run_id, prompt_id, step, phase) DO UPDATE SET {adds}, "
        f"reward_min = {least('reward_min', '<')}, reward_max = {least('reward_max', '>')}"
    )
    if connection.vendor == "postgresql":  # one statement, a column array each (no 6,000 placeholders)
        columns = list(
            zip(*[(prompt_id, step, phase, *a) for (prompt_id, step, phase), a in items], strict=True)
        )
        types = (
            "bigint",
            "bigint",
            "text",
            "int",
            "int",
            "int",
            "int",
            "float8",
            "float8",
            "float8",
            "float8",
        )
        with connection.cursor() as cur:
            cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT %s, u.* FROM unnest("
                + ", ".join(f"%s::{t}[]" for t in types)
                + f") AS u ORDER BY 2, 3, 4 {conflict}",
                [run_id, *(list(c) for c in columns)],
            )
    else:
        with connection.cursor() as cur:
            for chunk in _chunks(items, 500):
                values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
                params: list[Any] = []
                for (prompt_id, step, phase), a in chunk:
                    params.extend([run_id, prompt_id, step, phase, *a])
                cur.execute(f"INSERT INTO {table} ({cols}) VALUES {values} {conflict}", params)
    solved: dict[int, int] = {}
    for (prompt_id, step, _phase), a in items:
        if a[1] and (prompt_id not in solved or step < solved[prompt_id]):
            solved[prompt_id] = step
    known = {pk: first for pk, first in prompts.values()}
    earlier = sorted((pk, step) for pk, step in solved.items() if known.get(pk) is None or step < known[pk])
    if not earlier:
        return
    prompt_t = RolloutPrompt._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            for chunk in _chunks(earlier, 1000):
                values = ", ".join(["(%s::bigint, %s::bigint)"] * len(chunk))
                cur.execute(
                    f"UPDATE {prompt_t} AS p SET first_solved_step = v.step FROM (VALUES {values}) AS v(id, step) "
                    "WHERE p.id = v.id AND (p.first_solved_step IS NULL OR p.first_solved_step > v.step)",
                    [x for pair in chunk for x in pair],
                )
        return
    for prompt_id, step in earlier:
        RolloutPrompt.objects.filter(pk=prompt_id).filter(
            Q(first_solved_step__isnull=True) | Q(first_solved_step__gt=step)
        ).update(first_solved_step=step)


def stats_remove_after(run_id: int, after: int) -> None:
    """A resumed attempt redoes the steps after ``after`` (webapp.runs.attempts.redone_steps_replace
    deletes their samples): their aggregates go too, and first_solved_step is recomputed for the
    prompts that had solved there."""
    PromptStepStat.objects.filter(run_id=run_id, step__gt=after).delete()
    for prompt in RolloutPrompt.objects.filter(run_id=run_id, first_solved_step__gt=after).only("id"):
        first = PromptStepStat.objects.filter(prompt=prompt, correct__gt=0).aggregate(m=Min("step"))["m"]
        RolloutPrompt.objects.filter(pk=prompt.pk).update(first_solved_step=first)
