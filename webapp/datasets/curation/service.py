"""Running a curation recipe: a new version of a preference dataset.

``dataset_curate`` checks the recipe (shape, and that the datasets and checkpoints it names are the
user's) and creates the new version (same name, next version number, ``parent`` = the source,
``meta.recipe``), status importing; a worker then runs ``curation_run`` on it.

``curation_run`` reads from the source only what the steps need, streaming one step at a time over
the pairs still kept (a step gets only its columns: a million pairs never sit in memory as
objects), then writes the new version in one transaction: every row of the source, with ``kept``
and ``drop_reason`` (rows the source had already dropped stay dropped with their reason). On
PostgreSQL that is one COPY of the drops into a temporary table and one INSERT ... SELECT. Any
failure leaves no rows and marks the dataset failed with the error. ``meta.curation_stats`` records
per step its params, how many pairs it saw and dropped, in total and per source, and the final
kept count per source."""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Iterator

import numpy as np
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Length

from webapp.datasets.curation import recipes as r
from webapp.datasets.curation import steps as st
from webapp.datasets.models import Dataset, PairScore, PreferencePair, Problem
from webapp.datasets.services import _Progress
from webapp.errors import ServiceError
from webapp.projects.selectors import project_list
from webapp.runs.models import Checkpoint

log = logging.getLogger(__name__)

MAX_REASON = 200  # PreferencePair.drop_reason
STREAM_CHUNK = 5000


class CurationError(ServiceError):
    """A curation request that cannot be carried out; ``field_errors`` maps recipe paths
    (``steps[2].threshold``) or ``dataset`` to messages."""


def _check_references(user, recipe: r.Recipe) -> dict[str, list[str]]:
    projects = project_list(user=user)
    errors: dict[str, list[str]] = {}
    for i, step in enumerate(recipe.steps):
        if (bench := getattr(step, "benchmark", None)) is not None:
            ds = Dataset.objects.filter(pk=bench, project__in=projects).first()
            if ds is None:
                errors[f"steps[{i}].benchmark"] = ["no such dataset among yours"]
            elif ds.status != Dataset.Status.READY:
                errors[f"steps[{i}].benchmark"] = [
                    f"dataset {ds.name} v{ds.version} is not ready ({ds.status})"
                ]
        if (ckpt := getattr(step, "checkpoint", None)) is not None and not Checkpoint.objects.filter(
            pk=ckpt, run__project__in=projects
        ).exists():
            errors[f"steps[{i}].checkpoint"] = ["no such checkpoint among yours"]
    return errors


def dataset_curate(*, user, dataset: Dataset, recipe) -> Dataset:
    """Validate ``recipe`` (a dict or a Recipe) against ``dataset`` and create the curated version;
    its curation runs in a worker (short queue) once this transaction commits. Raises CurationError."""
    if dataset.kind != Dataset.Kind.PREFERENCE:
        raise CurationError(
            "cannot curate this dataset", {"dataset": ["only preference datasets can be curated"]}
        )
    if dataset.status != Dataset.Status.READY:
        raise CurationError(
            "cannot curate this dataset", {"dataset": [f"the dataset is not ready (status {dataset.status})"]}
        )
    try:
        recipe = r.recipe_validate(recipe)
    except r.RecipeInvalid as exc:
        raise CurationError("invalid recipe", exc.errors) from None
    if errors := _check_references(user, recipe):
        raise CurationError("invalid recipe", errors)
    meta = {
        "recipe": recipe.model_dump(mode="json"),
        "source": {"id": dataset.id, "name": dataset.name, "version": dataset.version},
    }
    from webapp.outbox import sender

    for attempt in range(5):
        try:
            with transaction.atomic():
                latest = (
                    Dataset.objects.filter(project=dataset.project_id, name=dataset.name).aggregate(
                        v=Max("version")
                    )["v"]
                    or 0
                )
                new = Dataset.objects.create(
                    project_id=dataset.project_id,
                    name=dataset.name,
                    kind=Dataset.Kind.PREFERENCE,
                    version=latest + 1,
                    parent=dataset,
                    status=Dataset.Status.IMPORTING,
                    created_by=user,
                    meta=meta,
                )
                # the message is written with the row (webapp.outbox) and sent once it commits
                sender.record(
                    "workers.tasks.curate_dataset",
                    [new.id],
                    queue="short",
                    subject=sender.Subject.DATASET,
                    subject_id=new.id,
                )
            break
        except IntegrityError:  # a concurrent new version took the number
            if attempt == 4:
                raise
    return new


# --- running ------------------------------------------------------------------------------------


class _Source:
    """The source's rows as arrays: row numbers (sorted), source codes, kept flags."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        rows, codes, kept = array("q"), array("i"), bytearray()
        names: dict[str, int] = {}
        qs = (
            PreferencePair.objects.filter(dataset=dataset)
            .order_by("row")
            .values_list("row", "source", "kept")
        )
        for row, source, k in qs.iterator(chunk_size=20000):
            rows.append(row)
            codes.append(names.setdefault(source, len(names)))
            kept.append(k)
        self.rows = np.frombuffer(rows, dtype=np.int64) if rows else np.zeros(0, np.int64)
        self.codes = np.frombuffer(codes, dtype=np.int32) if codes else np.zeros(0, np.int32)
        self.kept = np.frombuffer(bytes(kept), dtype=np.bool_).copy()
        self.names = list(names)
        self.n = len(self.rows)

    def positions(self, row_numbers) -> np.ndarray:
        pos = np.searchsorted(self.rows, row_numbers)
        pos = np.minimum(pos, max(self.n - 1, 0))
        return np.where(self.rows[pos] == row_numbers, pos, -1) if self.n else pos

    def count_by_source(self, idx: np.ndarray) -> np.ndarray:
        return np.bincount(self.codes[idx], minlength=len(self.names))


def _lineage(dataset: Dataset) -> list[int]:
    """The dataset and the versions it was curated from (rows line up by row number), closest
    first."""
    out = [dataset.id]
    ds = dataset
    while ds.meta.get("recipe") and ds.parent_id and len(out) < 100:
        ds = Dataset.objects.get(pk=ds.parent_id)
        out.append(ds.id)
    return out


def _scores(src: _Source, checkpoint_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(chosen score, margin) per source position from the checkpoint's PairScores on the source or
    on the versions it was curated from (matched by row); NaN where unscored."""
    chosen = np.full(src.n, np.nan)
    margin = np.full(src.n, np.nan)
    for ds_id in reversed(_lineage(src.dataset)):  # closer versions overwrite
        qs = PairScore.objects.filter(checkpoint_id=checkpoint_id, pair__dataset_id=ds_id).values_list(
            "pair__row", "chosen", "margin"
        )
        rows, c, m = [], [], []
        for row, ch, mg in qs.iterator(chunk_size=20000):
            rows.append(row)
            c.append(ch)
            m.append(mg)
        if not rows:
            continue
        pos = src.positions(np.array(rows, dtype=np.int64))
        ok = pos >= 0
        chosen[pos[ok]] = np.array(c, dtype=float)[ok]
        margin[pos[ok]] = np.array(m, dtype=float)[ok]
    return chosen, margin


def _benchmark(dataset_id: int) -> tuple[Iterator[str], str]:
    ds = Dataset.objects.get(pk=dataset_id)
    model = PreferencePair if ds.kind == Dataset.Kind.PREFERENCE else Problem
    prompts = model.objects.filter(dataset=ds).order_by("row").values_list("prompt", flat=True)
    return prompts.iterator(chunk_size=STREAM_CHUNK), f"{ds.name} v{ds.version}"


_DB_COLUMNS = {"prompt", "chosen_text", "rejected_text", "chosen_len", "rejected_len"}


def _stream(src: _Source, live: np.ndarray, need: st.Needs, scores) -> Iterator[dict]:
    """Rows at the ``live`` positions (sorted), with only the columns ``need`` names."""
    cols = sorted(need.columns & _DB_COLUMNS)
    ann = {}
    if "prompt_len" in need.columns:
        ann["prompt_len"] = Length("prompt")
    meta_keys = sorted(need.metadata_keys)
    for j, key in enumerate(meta_keys):
        ann[f"_meta{j}"] = KeyTextTransform(key, "metadata")
    with_source = "source" in need.columns
    live_mask = np.zeros(src.n, bool)
    live_mask[live] = True
    if not cols and not ann:  # everything is in memory already
        for pos in live:
            yield _row(src, int(pos), {}, with_source, meta_keys, scores)
        return
    qs = PreferencePair.objects.filter(dataset=src.dataset).order_by("row")
    if ann:
        qs = qs.annotate(**ann)
    pos = -1
    for values in qs.values("id", "row", *cols, *ann).iterator(chunk_size=STREAM_CHUNK):
        pos += 1
        if pos >= src.n or src.rows[pos] != values["row"]:
            raise RuntimeError("the source dataset changed while it was being curated")
        if live_mask[pos]:
            yield _row(src, pos, values, with_source, meta_keys, scores)


def _row(src: _Source, pos: int, values: dict, with_source: bool, meta_keys, scores) -> dict:
    row = values
    row["row"] = int(src.rows[pos])
    if with_source:
        row["source"] = src.names[src.codes[pos]]
    if meta_keys:
        row["metadata"] = {key: row.pop(f"_meta{j}") for j, key in enumerate(meta_keys)}
    if scores is not None:
        c, m = scores[0][pos], scores[1][pos]
        row["score"] = None if np.isnan(c) else float(c)
        row["margin"] = None if np.isnan(m) else float(m)
    return row


def _by_source(src: _Source, seen: np.ndarray, dropped: np.ndarray) -> dict:
    n_in, n_drop = src.count_by_source(seen), src.count_by_source(dropped)
    return {
        src.names[c]: {"in": int(n_in[c]), "dropped": int(n_drop[c])}
        for c in sorted(range(len(src.names)), key=lambda c: src.names[c])
        if n_in[c]
    }


def _apply(dataset: Dataset, src: _Source, recipe: r.Recipe, progress) -> tuple[dict[int, str], dict]:
    kept = src.kept.copy()
    reasons: dict[int, str] = {}  # source position -> drop reason of this curation
    step_stats = []
    score_cache: dict[int, tuple] = {}
    n_steps = len(recipe.steps)
    for i, step in enumerate(recipe.steps):
        t0 = time.monotonic()
        need = st.needs(step)
        live = np.flatnonzero(kept)
        scores = None
        if need.checkpoint is not None:
            if need.checkpoint not in score_cache:
                score_cache[need.checkpoint] = _scores(src, need.checkpoint)
            scores = score_cache[need.checkpoint]
        context = {}
        if need.benchmark is not None:
            prompts, name = _benchmark(need.benchmark)
            context = {"benchmark_prompts": prompts, "benchmark_name": name}
        result = st.apply_step(step, _stream(src, live, need, scores), **context)
        if len(result) != len(live):
            raise RuntimeError(f"step {i} ({step.step}) returned {len(result)} results for {len(live)} pairs")
        dropped = []
        for pos, reason in zip(live.tolist(), result, strict=True):
            if reason:
                reasons[pos] = str(reason)[:MAX_REASON]
                dropped.append(pos)
        dropped_idx = np.array(dropped, dtype=np.int64)
        kept[dropped_idx] = False
        step_stats.append(
            {
                "step": step.step,
                "params": step.model_dump(mode="json", exclude={"step"}),
                "in": len(live),
                "dropped": len(dropped),
                "by_source": _by_source(src, live, dropped_idx),
                "seconds": round(time.monotonic() - t0, 3),
            }
        )
        log.info(
            "curation of dataset %s: step %s (%s) dropped %s of %s",
            dataset.id,
            i,
            step.step,
            len(dropped),
            len(live),
        )
        progress.update(0.9 * (i + 1) / n_steps, 0, force=True)
    final = np.flatnonzero(kept)
    counts = src.count_by_source(final)
    stats = {
        "rows": src.n,
        "in": int(src.kept.sum()),
        "kept": len(final),
        "dropped": src.n - len(final),
        "steps": step_stats,
        "kept_by_source": {
            src.names[c]: int(counts[c]) for c in sorted(range(len(src.names)), key=lambda c: src.names[c])
        },
    }
    return reasons, stats


PAIR_COPY_COLUMNS = [
    "prompt", "chosen", "rejected", "source", "metadata", "chosen_text", "rejected_text", "chosen_len",
    "rejected_len",
]  # fmt: skip


def _write(new: Dataset, src: _Source, reasons: dict[int, str]) -> None:
    """Every row of the source into ``new``, with this curation's drops (inside the caller's
    transaction)."""
    drops = sorted((int(src.rows[pos]), reason) for pos, reason in reasons.items())
    if connection.vendor == "postgresql":
        table = PreferencePair._meta.db_table
        temp = f"curation_drops_{new.id}"
        cols = ", ".join(f'"{c}"' for c in PAIR_COPY_COLUMNS)
        p_cols = ", ".join(f'p."{c}"' for c in PAIR_COPY_COLUMNS)
        with connection.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {temp}")
            cur.execute(
                f'CREATE TEMPORARY TABLE {temp} ("row" integer PRIMARY KEY, "reason" text) ON COMMIT DROP'
            )
            with cur.cursor.copy(f'COPY {temp} ("row", "reason") FROM STDIN') as copy:
                for item in drops:
                    copy.write_row(item)
            # the search vector is copied, not recomputed by the insert trigger (it would be the same)
            cur.execute(
                f'INSERT INTO {table} ("dataset_id", "row", {cols}, "search", "kept", "drop_reason") '
                f'SELECT %s, p."row", {p_cols}, p."search", p."kept" AND d."row" IS NULL, '
                f'COALESCE(d."reason", p."drop_reason") '
                f'FROM {table} p LEFT JOIN {temp} d ON d."row" = p."row" WHERE p."dataset_id" = %s',
                [new.id, src.dataset.id],
            )
            cur.execute(f"DROP TABLE {temp}")
        return
    by_row = dict(drops)  # other databases (the embedded SQLite default): through the ORM
    batch = []
    qs = PreferencePair.objects.filter(dataset=src.dataset).order_by("row")
    for values in qs.values("row", "kept", "drop_reason", *PAIR_COPY_COLUMNS).iterator(chunk_size=2000):
        reason = by_row.get(values["row"])
        if reason is not None:
            values["kept"], values["drop_reason"] = False, reason
        batch.append(PreferencePair(dataset_id=new.id, **values))
        if len(batch) >= 2000:
            PreferencePair.objects.bulk_create(batch)
            batch = []
    PreferencePair.objects.bulk_create(batch)


def curation_run(dataset: Dataset) -> Dataset:
    """Run the recipe of a curated version (status importing) and store its rows, or nothing:
    on any error the dataset is marked failed with the error, and the error is raised."""
    started = time.monotonic()
    progress = _Progress(dataset.id)
    try:
        recipe = r.recipe_validate(dataset.meta["recipe"])
        source = Dataset.objects.get(pk=dataset.parent_id)
        src = _Source(source)
        load_seconds = time.monotonic() - started
        reasons, stats = _apply(dataset, src, recipe, progress)
        stats["load_seconds"] = round(load_seconds, 3)
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            if (
                locked.status != Dataset.Status.IMPORTING
                or PreferencePair.objects.filter(dataset=locked).exists()
            ):
                log.warning("dataset %s was curated already (status %s)", dataset.id, locked.status)
                return locked
            t_write = time.monotonic()
            _write(locked, src, reasons)
            stats["write_seconds"] = round(time.monotonic() - t_write, 3)
            stats["seconds"] = round(time.monotonic() - started, 3)
            Dataset.objects.filter(pk=dataset.pk).update(
                status=Dataset.Status.READY,
                row_count=src.n,
                progress=1.0,
                error="",
                meta={**locked.meta, "curation_stats": stats},
            )
    except Exception as exc:
        log.exception("curation of dataset %s failed", dataset.id)
        Dataset.objects.filter(pk=dataset.pk).update(
            status=Dataset.Status.FAILED,
            row_count=0,
            progress=0.0,
            error=f"curation failed, nothing was stored: {type(exc).__name__}: {exc}"[:2000],
        )
        raise
    finally:
        progress.close()
    dataset.refresh_from_db()
    return dataset
