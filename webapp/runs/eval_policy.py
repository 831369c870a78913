"""A run's evaluation policy (issue 15 point 4): an evaluation enqueued on the `eval` queue whenever a
checkpoint is saved. ``checkpoint_saved`` is called by services.checkpoint_record after the checkpoint
row is written: the worker's sink (webapp's side of trainers.base.Sink.log_checkpoint) and an external
run's checkpoint upload (webapp.api.checkpoint_api) both record through it.

Every ``every``-th checkpoint the run records (its ordinal in step order, so a policy edited mid-run
keeps counting from the run's first checkpoint) is evaluated on each benchmark with the policy's
protocol. Enqueuing is idempotent per checkpoint x benchmark x protocol: a redelivered sink write or a
second save of the step finds the evaluation it queued (``policy_key`` in the evaluation's protocol)
and adds none. These evaluations sit beside the trainers' own in-run ones (those have ``attempt`` set;
these have none, as the browser's on-demand ones)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from webapp.errors import ServiceError
from webapp.runs import capabilities
from webapp.runs.models import Checkpoint, EvalPolicy, Evaluation, Run

log = logging.getLogger(__name__)

#: bounds of a policy's settings (a 400 names the field beyond them)
MAX_N = 1024
MAX_NEW_TOKENS = 131072
MAX_BENCHMARKS = 20
MAX_EVERY = 1_000_000
MAX_TEMPERATURE = 5.0
MAX_KS = 32

#: the settings a policy may leave to the run (null: services.evaluation_settings)
SAMPLING = ("temperature", "top_p", "max_new_tokens")


class PolicyError(ServiceError):
    """An eval policy that cannot be set: a 400 naming each field (webapp.errors)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid eval policy", errors)


def policy_kinds() -> list[str]:
    return capabilities.kinds_that(capabilities.evaluates_checkpoints)


def run_can_have_policy(run: Run) -> bool:
    from webapp.runs import upload_eval

    return upload_eval.evaluates(run.kind)


def policy_of(run: Run) -> EvalPolicy | None:
    return EvalPolicy.objects.filter(run=run).prefetch_related("benchmarks").first()


def run_defaults(run: Run) -> dict[str, Any]:
    """The settings a policy's null fields take: the run's own at its first step."""
    from webapp.runs.services import evaluation_settings

    own = evaluation_settings(run, 0)
    return {"n": own["k"], **{key: own[key] for key in SAMPLING}}


def _int(value: Any, field: str, lo: int, hi: int, errors: dict) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors[field] = ["must be an integer"]
        return None
    if not lo <= value <= hi:
        errors[field] = [f"must be from {lo} to {hi}"]
        return None
    return value


def _float(value: Any, field: str, lo: float, hi: float, errors: dict, *, low_open: bool = False):
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors[field] = ["must be a number"]
        return None
    value = float(value)
    if value != value or value < lo or value > hi or (low_open and value == lo):
        errors[field] = [
            f"must be {'above' if low_open else 'from'} {lo} {'and at most' if low_open else 'to'} {hi}"
        ]
        return None
    return value


def validate(run: Run, data: Any, *, prefix: str = "") -> dict[str, Any]:
    """The policy ``data`` (the API's object) checked against the run: benchmarks are ready problems
    datasets of the run's project, every >= 1, 1 <= n, each k in ks from 1 to n (n: the policy's or
    the run's own), temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1. Raises PolicyError whose
    keys are field paths under ``prefix`` ("eval_policy." at launch)."""
    from webapp.datasets.models import Dataset

    errors: dict[str, list[str]] = {}
    if not isinstance(data, Mapping):
        raise PolicyError({prefix.rstrip(".") or "eval_policy": ["must be an object"]})
    known = {"enabled", "benchmarks", "every", "n", "ks", *SAMPLING}
    for key in sorted(set(data) - known):
        errors[f"{prefix}{key}"] = [f"unknown field; known: {', '.join(sorted(known))}"]
    if not run_can_have_policy(run):
        errors[prefix.rstrip(".") or "run"] = [
            f"a {run.kind} run has no policy checkpoints to evaluate ({', '.join(policy_kinds())} runs do)"
        ]
    out: dict[str, Any] = {"enabled": True, "every": 1, "n": None, "ks": [], "benchmarks": []}
    out.update({key: None for key in SAMPLING})
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            errors[f"{prefix}enabled"] = ["must be true or false"]
        else:
            out["enabled"] = data["enabled"]
    if "every" in data:
        out["every"] = _int(data["every"], f"{prefix}every", 1, MAX_EVERY, errors)
    if data.get("n") is not None:
        out["n"] = _int(data["n"], f"{prefix}n", 1, MAX_N, errors)
    if data.get("temperature") is not None:
        out["temperature"] = _float(data["temperature"], f"{prefix}temperature", 0.0, MAX_TEMPERATURE, errors)
    if data.get("top_p") is not None:
        out["top_p"] = _float(data["top_p"], f"{prefix}top_p", 0.0, 1.0, errors, low_open=True)
    if data.get("max_new_tokens") is not None:
        out["max_new_tokens"] = _int(
            data["max_new_tokens"], f"{prefix}max_new_tokens", 1, MAX_NEW_TOKENS, errors
        )
    n = out["n"] if out["n"] is not None else run_defaults(run)["n"]
    ks = data.get("ks") or []
    if not isinstance(ks, list) or len(ks) > MAX_KS:
        errors[f"{prefix}ks"] = [f"must be a list of at most {MAX_KS} integers"]
    else:
        bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
        if bad:
            errors[f"{prefix}ks"] = [f"every k must be a positive integer, got {bad[0]!r}"]
        elif any(k > n for k in ks):
            errors[f"{prefix}ks"] = [f"every k must be at most n = {n} (samples per problem), got {max(ks)}"]
        else:
            out["ks"] = sorted(set(ks))
    benchmarks = data.get("benchmarks", [])
    if not isinstance(benchmarks, list) or len(benchmarks) > MAX_BENCHMARKS:
        errors[f"{prefix}benchmarks"] = [f"must be a list of at most {MAX_BENCHMARKS} dataset ids"]
    else:
        problems = []
        for i, ref in enumerate(benchmarks):
            field = f"{prefix}benchmarks.{i}"
            if isinstance(ref, bool) or not isinstance(ref, int):
                errors[field] = ["must be the id of a problems dataset in this run's project"]
                continue
            # the same words for "no such dataset" and "another team's": no probing of ids
            ds = Dataset.objects.filter(pk=ref, project_id=run.project_id).first()
            if ds is None:
                errors[field] = [f"no dataset {ref} in this run's project"]
            elif ds.kind != Dataset.Kind.PROBLEMS:
                errors[field] = [f"dataset {ds.name} holds {ds.kind}, a benchmark must hold problems"]
            elif ds.status != Dataset.Status.READY:
                errors[field] = [f"dataset {ds.name} v{ds.version} is {ds.status}, not ready"]
            else:
                problems.append(ds.id)
        out["benchmarks"] = list(dict.fromkeys(problems))
        if out["enabled"] and not benchmarks and "benchmarks" not in errors:
            errors[f"{prefix}benchmarks"] = ["name at least one benchmark (or set enabled to false)"]
    if errors:
        raise PolicyError(errors)
    return out


@transaction.atomic
def policy_set(run: Run, data: Any, *, prefix: str = "") -> EvalPolicy:
    """Create or replace the run's policy (a PUT: fields left out take their defaults)."""
    clean = validate(run, data, prefix=prefix)
    benchmarks = clean.pop("benchmarks")
    policy, _ = EvalPolicy.objects.update_or_create(run=run, defaults=clean)
    policy.benchmarks.set(benchmarks)
    return policy


def policy_to_dict(run: Run, policy: EvalPolicy | None) -> dict[str, Any]:
    """The API's shape; a run without a policy reads as a disabled, empty one. ``defaults`` are the
    run's own settings the null fields take."""
    data: dict[str, Any] = {
        "run": run.id,
        "enabled": False,
        "benchmarks": [],
        "every": 1,
        "n": None,
        "ks": [],
        **{key: None for key in SAMPLING},
        "updated_at": None,
    }
    if policy is not None:
        data.update(
            enabled=policy.enabled,
            benchmarks=sorted(ds.id for ds in policy.benchmarks.all()),
            every=policy.every,
            n=policy.n,
            ks=list(policy.ks or []),
            updated_at=policy.updated_at,
            **{key: getattr(policy, key) for key in SAMPLING},
        )
    data["available"] = run_can_have_policy(run)
    data["defaults"] = run_defaults(run) if data["available"] else {}
    return data


def checkpoint_ordinal(checkpoint: Checkpoint) -> int:
    """1 for the run's first checkpoint (by step), 2 for its second, ... (rows retention deleted
    count too: their row stays with deleted_at set, so the count never shifts)."""
    return Checkpoint.objects.filter(run_id=checkpoint.run_id, step__lte=checkpoint.step).count()


def policy_protocol(policy: EvalPolicy) -> dict[str, Any]:
    """The settings the policy fixes (n as evaluation_request's k); the rest are the run's own."""
    given = {key: getattr(policy, key) for key in SAMPLING if getattr(policy, key) is not None}
    if policy.n is not None:
        given["k"] = policy.n
    return given


def policy_key(checkpoint: Checkpoint, benchmark_id: int, protocol: Mapping[str, Any]) -> str:
    """What makes an enqueued evaluation the same one: the checkpoint (its id and the attempt that
    wrote it: a resumed attempt that rewrites the step has new weights), the benchmark and the protocol."""
    text = json.dumps([checkpoint.id, checkpoint.attempt, benchmark_id, dict(protocol)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def checkpoint_saved(checkpoint: Checkpoint) -> list[Evaluation]:
    """Enqueue the policy's evaluations of a just-recorded checkpoint (none when the run has no enabled
    policy, the checkpoint is not an every-th one, or retention already deleted it). Returns the
    evaluations queued by this call."""
    policy = EvalPolicy.objects.filter(run_id=checkpoint.run_id, enabled=True).first()
    if policy is None or checkpoint.deleted_at is not None:
        return []
    if checkpoint_ordinal(checkpoint) % policy.every:
        return []
    return enqueue(checkpoint, policy)


def enqueue(checkpoint: Checkpoint, policy: EvalPolicy) -> list[Evaluation]:
    from webapp.runs import services

    queued = []
    given = policy_protocol(policy)
    for benchmark in policy.benchmarks.all():
        try:
            ev = services.evaluation_request(
                checkpoint=checkpoint,
                benchmark=benchmark,
                ks=list(policy.ks or []) or None,
                policy_key=policy_key(checkpoint, benchmark.id, {**given, "ks": policy.ks}),
                **given,
            )
        except services.RunError as exc:
            # a benchmark deleted or re-imported since, a checkpoint retention removed meanwhile: the
            # checkpoint stays recorded (the trainer must not fail for it); the reason is logged
            log.warning(
                "eval policy of run %s: checkpoint %s on %s not queued: %s %s",
                checkpoint.run_id, checkpoint.step, benchmark.id, exc.message, exc.field_errors,
            )  # fmt: skip
            continue
        if ev is not None:
            queued.append(ev)
    return queued
