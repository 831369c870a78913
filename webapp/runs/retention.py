"""Checkpoint sizes and the retention policy (config ``retention``: keep_last, keep_every, best_metric).

Why: a 7B run writes ~15 GB (bf16 weights) plus ~60 GB (optimizer state) per checkpoint; keeping all
of them fills the artifact store within a day. After each checkpoint is recorded, the checkpoints no
rule keeps are deleted from disk. The row stays, marked ``deleted_at``, so charts, evaluations and
links still say which step it was and that its files are gone.

Never deleted: the newest checkpoint (resume and init_from_run start from it), one with a queued or
running evaluation, one a queued or running scoring job reads. The check and the marking happen under
row locks on the run's checkpoints, and evaluation_request / scoring_job_create lock the checkpoint
row and refuse a deleted one, so a request and a deletion can never cross.

Only directories the platform wrote are measured or deleted: ``<ORLAB_ARTIFACTS>/runs/<run id>/
attempt-<n>/checkpoint-<step>`` (what the worker's sink creates), never a symlink, never a path an API
client recorded for an external run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from trainers.common.compute_config import RetentionConfig
from webapp.runs.models import Checkpoint, Evaluation, Run

log = logging.getLogger(__name__)

ATTEMPT_DIR = re.compile(r"attempt-\d+")
CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")
PENDING_EVALUATION = (Evaluation.Status.QUEUED, Evaluation.Status.RUNNING)


def run_artifact_dir(run_id: int) -> Path:
    """Where the worker's sink writes a run's files (workers.sinks.DbSink.artifact_dir)."""
    return Path(settings.ORLAB_ARTIFACTS) / "runs" / str(run_id)


def owned_directory(run_id: int, path: str) -> Path | None:
    """``path`` when it is a checkpoint directory the platform wrote for run ``run_id`` (see the module
    doc), resolved; None otherwise."""
    if not path:
        return None
    candidate = Path(path)
    if not candidate.is_absolute() or candidate.is_symlink():
        return None
    try:
        resolved = candidate.resolve(strict=True)
        root = run_artifact_dir(run_id).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if resolved.parent.parent != root or not resolved.is_dir():
        return None
    if not (ATTEMPT_DIR.fullmatch(resolved.parent.name) and CHECKPOINT_DIR.fullmatch(resolved.name)):
        return None
    return resolved


def directory_size(directory: Path) -> int:
    """Bytes of the regular files under ``directory`` (symlinks neither followed nor counted)."""
    total = 0
    for parent, _dirs, files in os.walk(directory, followlinks=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(parent, name))
            except OSError:
                continue  # removed while walking
            if not os.path.islink(os.path.join(parent, name)):
                total += st.st_size
    return total


def record_size(checkpoint: Checkpoint) -> None:
    """Store the size of a platform-written checkpoint directory on its row (None for other paths)."""
    directory = owned_directory(checkpoint.run_id, checkpoint.path)
    size = directory_size(directory) if directory is not None else None
    if size != checkpoint.size_bytes:
        checkpoint.size_bytes = size
        Checkpoint.objects.filter(pk=checkpoint.pk).update(size_bytes=size)


# --- the policy -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A live checkpoint as the policy sees it: its step, its best_metric value (None: unknown) and
    whether something pending protects it."""

    step: int
    value: float | None = None
    protected: bool = False


def policy_of(config: Mapping[str, Any] | None) -> RetentionConfig | None:
    """The run's retention policy, or None when it keeps everything (no rule set, or an external run's
    free-form config that is not a valid policy)."""
    raw = (config or {}).get("retention") if isinstance(config, Mapping) else None
    if not isinstance(raw, Mapping):
        return None
    try:
        policy = RetentionConfig.model_validate(raw)
    except ValidationError:
        return None
    if not (policy.keep_last or policy.keep_every or policy.best_metric):
        return None
    return policy


def steps_to_keep(policy: RetentionConfig, candidates: Iterable[Candidate]) -> set[int]:
    """Steps a checkpoint is kept at: the newest, the protected, the newest ``keep_last``, every
    ``keep_every``-th step, and the best so far by ``best_metric`` (the earliest of equals)."""
    items = sorted(candidates, key=lambda c: c.step)
    if not items:
        return set()
    keep = {items[-1].step}
    keep.update(c.step for c in items if c.protected)
    if policy.keep_last:
        keep.update(c.step for c in items[-policy.keep_last :])
    if policy.keep_every:
        keep.update(c.step for c in items if c.step % policy.keep_every == 0)
    if policy.best_metric:
        scored = [c for c in items if c.value is not None and math.isfinite(c.value)]
        if scored:
            sign = 1 if policy.best_mode == "max" else -1
            best = max(scored, key=lambda c: (sign * c.value, -c.step))
            keep.add(best.step)
    return keep


def _metric_values(run: Run, checkpoints: list[Checkpoint], key: str) -> dict[int, float | None]:
    """``key`` at each checkpoint: the metrics recorded with it, else the run's metric logged at that
    step, else a finished evaluation of it that reports the key."""
    from webapp.runs.metric_store import series_read

    values: dict[int, float | None] = {}
    for c in checkpoints:
        v = (c.metrics or {}).get(key)
        values[c.step] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
    missing = {step for step, v in values.items() if v is None}
    if missing:
        series = series_read([run.id], [key]).get(run.id, {}).get(key)
        if series is not None:
            for step, value in zip(series["steps"].tolist(), series["values"].tolist(), strict=True):
                if step in missing and math.isfinite(value):
                    values[step] = value
                    missing.discard(step)
    if missing:
        done = Evaluation.objects.filter(
            checkpoint__in=[c for c in checkpoints if c.step in missing], status=Evaluation.Status.SUCCEEDED
        ).values_list("checkpoint__step", "metrics")
        for step, metrics in done:
            v = (metrics or {}).get(key)
            if values.get(step) is None and isinstance(v, int | float) and not isinstance(v, bool):
                values[step] = float(v) if math.isfinite(v) else None
    return values


def _protected_ids(checkpoints: list[Checkpoint]) -> set[int]:
    from webapp.datasets.models import ScoringJob

    ids = [c.pk for c in checkpoints]
    pending = set(
        Evaluation.objects.filter(checkpoint_id__in=ids, status__in=PENDING_EVALUATION).values_list(
            "checkpoint_id", flat=True
        )
    )
    pending.update(
        ScoringJob.objects.filter(
            checkpoint_id__in=ids, status__in=(ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING)
        ).values_list("checkpoint_id", flat=True)
    )
    # a run that starts from one of them (model_path "checkpoint:<id>") and has not ended, or may be
    # resumed after an interruption, still needs its files
    references = {f"checkpoint:{pk}": pk for pk in ids}
    starting = (Run.Status.QUEUED, Run.Status.WAITING, Run.Status.RUNNING, Run.Status.INTERRUPTED)
    pending.update(
        references[ref]
        for ref in Run.objects.filter(
            status__in=starting, config__model_path__in=list(references)
        ).values_list("config__model_path", flat=True)
    )
    return pending


def apply_retention(run_id: int) -> list[Checkpoint]:
    """Delete the checkpoints of ``run_id`` that its policy does not keep; returns them (marked).

    Rows are marked under lock in one transaction; the files are removed after it commits (a crash in
    between leaves files on disk, never a live row without files)."""
    run = Run.objects.only("id", "config").get(pk=run_id)
    policy = policy_of(run.config)
    if policy is None:
        return []
    with transaction.atomic():
        live = list(
            Checkpoint.objects.select_for_update()
            .filter(run_id=run_id, deleted_at__isnull=True)
            .order_by("step")
        )
        protected = _protected_ids(live)
        values = _metric_values(run, live, policy.best_metric) if policy.best_metric else {}
        keep = steps_to_keep(policy, [Candidate(c.step, values.get(c.step), c.pk in protected) for c in live])
        doomed = [c for c in live if c.step not in keep and owned_directory(run_id, c.path) is not None]
        now = timezone.now()
        Checkpoint.objects.filter(pk__in=[c.pk for c in doomed]).update(deleted_at=now)
    for c in doomed:
        c.deleted_at = now
        directory = owned_directory(run_id, c.path)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            if directory.exists():
                log.warning("retention could not fully remove %s (checkpoint %s)", directory, c.pk)
    if doomed:
        log.info("run %s: retention deleted checkpoints at steps %s", run_id, [c.step for c in doomed])
    return doomed


# --- rollout samples ------------------------------------------------------------------------------
# Why: an RL run logs every group of every step (millions of rows, ~2 KB each). Per run, every sample
# of the last K steps is kept, and of the older steps a seeded fraction of the groups (whole groups:
# an old step's group view shows all n completions or none; a sample without a group_index counts as
# a group of its own). The per-(prompt, step) aggregates (PromptStepStat) and the prompts are never
# deleted, so the solve matrix and a prompt's history cover every step. A deleted sample's
# client_key moves into SampleKeptKey, so a re-sent copy stays skipped (webapp.runs.samples).
#
# Settings (environment): ORLAB_SAMPLE_KEEP_LAST_STEPS (K; 0, the default: keep every sample),
# ORLAB_SAMPLE_KEEP_FRACTION (of the older groups; default 0.1), ORLAB_SAMPLE_RETENTION_SEED
# (default 0). Per run, the config's retention section overrides them: ``samples_keep_last_steps``,
# ``samples_keep_fraction`` (trainers.common.compute_config.RetentionConfig).
#
# When: after an ingest (API or worker sink) whose newest step crosses a multiple of
# max(1, K // 4) past K (the pass then runs after that batch commits), and on demand
# (``webapp.runs.retention.samples_retention_apply(run_id)``). A pass is idempotent: the selection depends only on the seed,
# the run, and the group (phase, step, group_index), never on what is already deleted.

SAMPLE_FRACTION_SCALE = 1_000_000


@dataclass(frozen=True)
class SamplePolicy:
    keep_last_steps: int
    keep_fraction: float
    seed: int

    @property
    def stride(self) -> int:
        return max(1, self.keep_last_steps // 4)


def _env_number(name: str, default: float) -> float:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def sample_policy_of(config: Mapping[str, Any] | None) -> SamplePolicy | None:
    """The run's sample retention, or None when every sample is kept (K = 0)."""
    keep_last = int(_env_number("ORLAB_SAMPLE_KEEP_LAST_STEPS", 0))
    fraction = _env_number("ORLAB_SAMPLE_KEEP_FRACTION", 0.1)
    seed = int(_env_number("ORLAB_SAMPLE_RETENTION_SEED", 0))
    raw = (config or {}).get("retention") if isinstance(config, Mapping) else None
    if isinstance(raw, Mapping):
        k = raw.get("samples_keep_last_steps")
        if isinstance(k, int) and not isinstance(k, bool) and k >= 0:
            keep_last = k
        f = raw.get("samples_keep_fraction")
        if isinstance(f, int | float) and not isinstance(f, bool) and 0 <= f <= 1:
            fraction = float(f)
    if keep_last <= 0:
        return None
    return SamplePolicy(keep_last, min(max(fraction, 0.0), 1.0), seed)


def samples_retention_after_ingest(run_id: int, before: int | None, newest: int, config=None) -> None:
    """Called once a batch committed (webapp.runs.samples): a pass when the newest step crossed a
    stride boundary (see above). ``before``: the run's newest step before the batch."""
    if config is None:
        config = Run.objects.filter(pk=run_id).values_list("config", flat=True).first()
    policy = sample_policy_of(config)
    if policy is None or newest - policy.keep_last_steps < 0:
        return
    mark = (newest - policy.keep_last_steps) // policy.stride
    old = None if before is None else before - policy.keep_last_steps
    if old is not None and old >= 0 and old // policy.stride >= mark:
        return
    try:
        samples_retention_apply(run_id)
    except Exception:  # the batch is stored; the next crossing (or the command) tries again
        log.exception("sample retention of run %s failed", run_id)


def _group_key_kept(
    seed: int, run_id: int, phase: str, step: int, group: int | None, sample_id: int, fraction
):
    import zlib

    key = f"{seed}:{run_id}:{phase}:{step}:{group if group is not None else f'id{sample_id}'}"
    return zlib.crc32(key.encode()) % SAMPLE_FRACTION_SCALE < fraction * SAMPLE_FRACTION_SCALE


def samples_retention_apply(run_id: int, policy: SamplePolicy | None = None) -> int:
    """Delete the samples of ``run_id`` its policy does not keep; returns how many went. Under the
    run's exclusive sample lock (ingest holds it shared), in one transaction: keys kept, then the
    rows (and their token arrays) deleted."""
    from webapp.runs.models import Sample, SampleKeptKey, SampleTokens
    from webapp.runs.samples import LOCK_CLASS

    if policy is None:
        config = Run.objects.filter(pk=run_id).values_list("config", flat=True).first()
        policy = sample_policy_of(config)
    if policy is None:
        return 0
    newest = Sample.objects.filter(run_id=run_id).order_by("-step").values_list("step", flat=True).first()
    if newest is None:
        return 0
    cutoff = newest - policy.keep_last_steps  # steps <= cutoff are "older"
    if cutoff < 0:
        return 0
    from django.db import connection

    threshold = int(round(policy.keep_fraction * SAMPLE_FRACTION_SCALE))
    sample_t, tokens_t, kept_t = (m._meta.db_table for m in (Sample, SampleTokens, SampleKeptKey))
    with transaction.atomic(), connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, run_id % 2**31])
            # the same key as _group_key_kept's, hashed by PostgreSQL (a different but equally
            # stable selection)
            doomed = (
                f"SELECT id FROM {sample_t} WHERE run_id = %s AND step <= %s AND "
                f"abs(hashtextextended(%s || ':' || run_id || ':' || phase || ':' || step || ':' || "
                f"COALESCE(group_index::text, 'id' || id::text), 0) %% {SAMPLE_FRACTION_SCALE}) >= %s"
            )
            params = [run_id, cutoff, str(policy.seed), threshold]
            cur.execute(
                f"INSERT INTO {kept_t} (run_id, client_key) SELECT run_id, client_key FROM {sample_t} "
                f"WHERE id IN ({doomed}) AND client_key IS NOT NULL ON CONFLICT DO NOTHING",
                params,
            )
            cur.execute(f"DELETE FROM {tokens_t} WHERE sample_id IN ({doomed})", params)
            cur.execute(f"DELETE FROM {sample_t} WHERE id IN ({doomed})", params)
            deleted = cur.rowcount
        else:  # the embedded SQLite mode: one writer at a time anyway
            rows = Sample.objects.filter(run_id=run_id, step__lte=cutoff).values_list(
                "id", "phase", "step", "group_index", "client_key"
            )
            ids, keys = [], []
            for pk, phase, step, group, key in rows.iterator(chunk_size=5000):
                if not _group_key_kept(policy.seed, run_id, phase, step, group, pk, policy.keep_fraction):
                    ids.append(pk)
                    if key is not None:
                        keys.append(key)
            SampleKeptKey.objects.bulk_create(
                [SampleKeptKey(run_id=run_id, client_key=k) for k in keys],
                batch_size=1000,
                ignore_conflicts=True,
            )
            deleted = 0
            for i in range(0, len(ids), 900):
                chunk = ids[i : i + 900]
                SampleTokens.objects.filter(sample_id__in=chunk).delete()
                deleted += Sample.objects.filter(pk__in=chunk).delete()[1].get("runs.Sample", 0)
    if deleted:
        log.info("run %s: sample retention deleted %s samples at steps <= %s", run_id, deleted, cutoff)
    return deleted
