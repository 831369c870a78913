"""Dataset import: streaming, validated row by row, all-or-nothing.

The whole import runs in one transaction (on SQLite batches commit one by one and a rejected import
deletes them: see _import_transaction): a file with a bad row is rejected with the row numbers
and reasons of the first errors, and nothing of it is stored. On PostgreSQL rows go in with COPY
(tens of thousands of rows per second) and progress is written through a second connection, so
the page and the API see it while the import's own transaction is still open."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import orjson
from django.db import connection, connections, transaction
from django.db.models import Max

from webapp.datasets import readers
from webapp.datasets.models import Dataset, PairScore, PreferencePair, Problem, ScoringJob
from webapp.datasets.row_writer import row_writer
from webapp.datasets.validation import RowError, validate_pair, validate_problem
from webapp.errors import ServiceError
from webapp.projects.models import Project
from webapp.runs import capabilities

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
ANALYZE_AFTER_ROWS = 20_000  # a file this large gets the table's statistics refreshed
PROGRESS_EVERY = 5000  # rows between looks at the clock (progress is written at most twice a second)


class ImportRejected(ServiceError):
    """``errors`` maps a field ("file", "name", ...) or a row ("row 12") to messages."""

    def __init__(self, detail: str, errors: dict[str, list[str]]):
        super().__init__(detail, errors)
        self.detail = detail
        self.errors = errors


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def dataset_create_for_import(*, user, project, name: str, kind: str, path: Path, filename: str) -> Dataset:
    """Check the file can be imported (known format, not imported before) and create the dataset
    row that the import fills; a new name starts at version 1, an existing one gets the next."""
    if kind not in Dataset.Kind.values:
        raise ImportRejected("invalid input", {"kind": [f"must be one of {Dataset.Kind.values}"]})
    try:
        fmt = readers.detect_format(filename)
    except readers.FileError as exc:
        raise ImportRejected("unsupported file", {"file": [str(exc)]}) from None
    sha = file_sha256(path)
    with transaction.atomic():
        # The project's row lock makes the duplicate check and the next version one step: concurrent
        # uploads into a project take turns here (for milliseconds: the import runs after the commit),
        # so a file is imported once and each upload of a name gets its own version.
        Project.objects.select_for_update().only("pk").get(pk=project.pk)
        dup = (
            Dataset.objects.filter(project=project, sha256=sha, kind=kind)
            .filter(status__in=[Dataset.Status.READY, Dataset.Status.IMPORTING], source_run__isnull=True)
            .order_by("id")
            .first()
        )
        if dup:
            how = "already imported" if dup.status == Dataset.Status.READY else "being imported"
            raise ImportRejected(
                "already imported",
                {"file": [f"this file was {how} as {dup.name} v{dup.version} (id {dup.id})"]},
            )
        latest = Dataset.objects.filter(project=project, name=name).aggregate(v=Max("version"))["v"] or 0
        return Dataset.objects.create(
            project=project,
            name=name,
            kind=kind,
            version=latest + 1,
            sha256=sha,
            created_by=user,
            status=Dataset.Status.IMPORTING,
            meta={"filename": filename, "format": fmt, "bytes": path.stat().st_size},
        )


class _Progress:
    """Writes the import's progress from outside its transaction (PostgreSQL only: SQLite has a
    single writer, which the import holds)."""

    def __init__(self, dataset_id: int):
        self.dataset_id = dataset_id
        self.conn = connections.create_connection("default") if connection.vendor == "postgresql" else None
        self.last = 0.0

    def update(self, fraction: float, rows: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.conn is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        with self.conn.cursor() as cur:
            cur.execute(
                "UPDATE datasets_dataset SET progress = %s, row_count = %s WHERE id = %s",
                [fraction, rows, self.dataset_id],
            )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _json_text(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson cannot write (an integer beyond 64 bits) the standard library can
        return json.dumps(value)


def _pair_columns(ds_id: int, row: int, pair) -> tuple:
    return (
        ds_id, row, pair.prompt, _json_text(pair.chosen), _json_text(pair.rejected), pair.source,
        _json_text(pair.metadata), pair.chosen_text, pair.rejected_text, len(pair.chosen_text),
        len(pair.rejected_text), True, "",
    )  # fmt: skip


PAIR_FIELDS = [
    "dataset_id", "row", "prompt", "chosen", "rejected", "source", "metadata", "chosen_text", "rejected_text",
    "chosen_len", "rejected_len", "kept", "drop_reason",
]  # fmt: skip
PROBLEM_FIELDS = ["dataset_id", "row", "domain", "prompt", "answer", "tests", "metadata"]


def _problem_columns(ds_id: int, row: int, p) -> tuple:
    return (ds_id, row, p.domain, p.prompt, p.answer, _json_text(p.tests), _json_text(p.metadata))


class TooLongForRequest(Exception):
    """An import in a request stored more than its budget: nothing of it is kept, and a worker
    imports the file instead (a few KB of Parquet can hold GBs of rows)."""


def dataset_import(dataset: Dataset, path: Path, *, request_budget: int | None = None) -> Dataset:
    """Validate and store every row of ``path`` into ``dataset``, or nothing. Raises ImportRejected
    (after marking the dataset failed with its row errors), or TooLongForRequest (nothing stored,
    the dataset still importing) once the rows' text passes ``request_budget`` bytes."""
    fmt = dataset.meta["format"]
    if dataset.kind == Dataset.Kind.PREFERENCE:
        validate, columns, model, fields = validate_pair, _pair_columns, PreferencePair, PAIR_FIELDS
    else:
        validate, columns, model, fields = validate_problem, _problem_columns, Problem, PROBLEM_FIELDS
    progress = _Progress(dataset.id)
    errors: list[tuple[int, str]] = []
    n = 0
    started = time.monotonic()
    try:
        raw, f = readers.open_counting(path)
        with f, _import_transaction():
            with row_writer(model, fields) as write:
                for row_no, record in readers.iter_records(f, fmt):
                    if isinstance(record, str):
                        errors.append((row_no, record))
                    else:
                        try:
                            item = validate(record)
                        except RowError as exc:
                            errors.append((row_no, str(exc)))
                        else:
                            if not errors:
                                row = columns(dataset.id, n, item)
                                write(row)
                                if request_budget is not None:
                                    request_budget -= sum(len(v) for v in row if isinstance(v, str))
                                    if request_budget < 0:
                                        raise TooLongForRequest()
                            n += 1
                            if not n % PROGRESS_EVERY:
                                progress.update(raw.fraction, n)
                    if len(errors) >= MAX_REPORTED_ERRORS:
                        break
                if errors:
                    raise _Abort()
                if n == 0:
                    errors.append((0, "the file holds no rows"))
                    raise _Abort()
            finished = Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.IMPORTING).update(
                status=Dataset.Status.READY, row_count=n, progress=1.0, error=""
            )
            if not finished:  # the housekeeping failed it meanwhile (its claim looked dead): it stays so
                raise _Superseded()
    except _Superseded:
        _discard_stored_rows(dataset)  # PostgreSQL rolled the rows back; SQLite had committed batches
        dataset.refresh_from_db()
        raise ImportRejected(
            f"the import was ended meanwhile: {dataset.error}", {"file": [dataset.error]}
        ) from None
    except _Abort:
        return _reject(dataset, errors)
    except TooLongForRequest:
        _discard_stored_rows(dataset)
        Dataset.objects.filter(pk=dataset.pk).update(row_count=0, progress=0.0)
        raise
    except readers.FileError as exc:
        errors.append((0, str(exc)))
        return _reject(dataset, errors)
    except Exception as exc:  # noqa: BLE001 (any failure ends the dataset failed, never importing)
        log.exception("import of dataset %s failed", dataset.id)
        errors.append((0, f"the file could not be imported ({type(exc).__name__}: {str(exc)[:300]})"))
        return _reject(dataset, errors)
    finally:
        progress.close()
    if n >= ANALYZE_AFTER_ROWS:
        _refresh_statistics(model)
    dataset.refresh_from_db()
    dataset.meta = {**dataset.meta, "import_seconds": round(time.monotonic() - started, 3)}
    dataset.save(update_fields=["meta"])
    return dataset


class _Abort(Exception):
    pass


class _Superseded(Exception):
    """The dataset stopped being `importing` while its rows were stored (the housekeeping failed an
    import whose claim looked dead): never turn it `ready` over its `failed`."""


def _refresh_statistics(model) -> None:
    """Planner statistics for a table that just grew by a large file, at once (autovacuum may take
    minutes): they decide whether a pair search walks the row order or asks the GIN index
    (datasets.selectors.SEARCH_SQL). A second or two for a million rows, and after the commit, so
    that no lock outlives it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(f"ANALYZE {model._meta.db_table}")


def _import_transaction():
    """PostgreSQL: the whole import is one transaction (COPY streams into it; all or nothing). SQLite
    (the embedded default) has one writer for the whole database, and an import-long transaction
    would make a logging run or an API write wait past the busy timeout: there every batch of rows
    commits on its own (row_writer's bulk inserts), the dataset stays `importing` until the end, and a
    failed import deletes what it stored (``_reject``)."""
    import contextlib

    return transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext()


def _discard_stored_rows(dataset: Dataset) -> None:
    if connection.vendor != "postgresql":  # SQLite imports commit batch by batch (_import_transaction)
        with connection.cursor() as cur:
            for model in (PreferencePair, Problem):
                cur.execute(f"DELETE FROM {model._meta.db_table} WHERE dataset_id = %s", [dataset.pk])


def _reject(dataset: Dataset, errors: list[tuple[int, str]]):
    _discard_stored_rows(dataset)
    unit = "line" if dataset.meta.get("format") in ("jsonl", "csv") else "row"
    row_errors = [{unit: row, "error": msg} for row, msg in errors]
    summary = "; ".join(f"{unit} {row}: {msg}" if row else msg for row, msg in errors[:3])
    Dataset.objects.filter(pk=dataset.pk).update(
        status=Dataset.Status.FAILED,
        row_count=0,
        progress=0.0,
        error=f"rejected, nothing was imported: {summary}",
        meta={**dataset.meta, "row_errors": row_errors},
    )
    raise ImportRejected(
        "the file has bad rows; nothing was imported",
        {(f"{unit} {row}" if row else "file"): [msg] for row, msg in errors},
    )


# Files up to this size are imported inside the upload request (immediate 201/400); larger ones go
# to a worker and report progress on the dataset.
SYNC_IMPORT_BYTES = 8 * 2**20
# ... unless their rows' text passes this (the request stops, rolls back and hands the file on).
SYNC_IMPORT_TEXT_BYTES = 64 * 2**20

# The largest file an upload may bring (settings.ORLAB_MAX_UPLOAD_BYTES, else ORLAB_MAX_UPLOAD_MB in
# the environment). Memory does not grow with it (the readers are bounded per record); disk and the
# import's time do.
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30


def max_upload_bytes() -> int:
    import os

    from django.conf import settings

    configured = getattr(settings, "ORLAB_MAX_UPLOAD_BYTES", None)
    if configured is None:
        configured = int(
            float(os.environ.get("ORLAB_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_BYTES / 2**20)) * 2**20
        )
    return int(configured)


def dataset_upload(*, user, project, name: str, kind: str, upload) -> tuple[Dataset, bool]:
    """Store the uploaded file in the artifact store and import it: in this request when small,
    else in a worker. Returns (dataset, imported in the background?)."""
    import shutil
    import uuid

    from django.conf import settings

    limit = max_upload_bytes()
    if upload.size > limit:
        raise ImportRejected(
            "file too large",
            {"file": [f"{upload.size / 2**20:.1f} MB is beyond the upload limit of {limit / 2**20:.1f} MB"]},
        )
    uploads = Path(settings.ORLAB_ARTIFACTS) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    path = uploads / f"{uuid.uuid4().hex}-{Path(upload.name).name}"
    try:
        with open(path, "wb") as out:
            if hasattr(upload, "temporary_file_path"):
                with open(upload.temporary_file_path(), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                for chunk in upload.chunks():
                    out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    try:
        dataset = dataset_create_for_import(
            user=user, project=project, name=name, kind=kind, path=path, filename=upload.name
        )
    except ImportRejected:
        path.unlink(missing_ok=True)
        raise
    if path.stat().st_size > SYNC_IMPORT_BYTES:
        _import_in_background(dataset, path)
        return dataset, True
    try:
        dataset_import(dataset, path, request_budget=SYNC_IMPORT_TEXT_BYTES)
    except TooLongForRequest:
        _import_in_background(dataset, path)
        return dataset, True
    except BaseException:
        path.unlink(missing_ok=True)
        if Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.FAILED).exists():
            dataset.delete()  # answered in this request: nothing of the file stays behind
        raise
    path.unlink(missing_ok=True)
    return dataset, False


def _import_in_background(dataset: Dataset, path: Path) -> None:
    from webapp.outbox import sender

    # the outbox delivers it (broker down: later); should this process die between the dataset's
    # commit and this row, the housekeeping fails the dataset (sender.sweep_orphan_imports)
    sender.record(
        "workers.tasks.import_dataset",
        [dataset.id, str(path)],
        queue="short",
        subject=sender.Subject.DATASET,
        subject_id=dataset.id,
    )


def dataset_export_jsonl(dataset: Dataset) -> Path:
    """The rows of a ready dataset version as a JSONL file in the artifact store, written once
    (atomically) and reused: what a trainer reads. Preference sets export only kept pairs."""
    import os

    from django.conf import settings

    directory = Path(settings.ORLAB_ARTIFACTS) / "datasets"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dataset.id}-v{dataset.version}-{(dataset.sha256 or 'x')[:12]}.jsonl"
    if path.exists():
        return path
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        if dataset.kind == Dataset.Kind.PREFERENCE:
            rows = PreferencePair.objects.filter(dataset=dataset, kept=True).order_by("row")
            fields = ["id", "prompt", "chosen", "rejected", "chosen_text", "rejected_text", "source"]
        else:
            rows = Problem.objects.filter(dataset=dataset).order_by("row")
            fields = ["id", "domain", "prompt", "answer", "tests", "metadata"]
        for row in rows.values(*fields).iterator(chunk_size=5000):
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def scoring_job_create(*, user, dataset: Dataset, checkpoint) -> ScoringJob:
    """Queue a reward-model checkpoint to score every pair of ``dataset`` (both must be the user's;
    the caller checked). Runs on the short queue (README "Queues and the run lifecycle")."""
    from webapp.outbox import sender

    if dataset.kind != Dataset.Kind.PREFERENCE:
        raise ImportRejected("invalid input", {"dataset": ["only preference datasets can be scored"]})
    if dataset.status != Dataset.Status.READY:
        raise ImportRejected("invalid input", {"dataset": [f"dataset is {dataset.status}, not ready"]})
    if not capabilities.scores_datasets(checkpoint.run.kind):  # the trainer declares a scorer
        raise ImportRejected("invalid input", {"checkpoint": ["not a checkpoint of a reward-model run"]})
    with transaction.atomic():
        # the row lock orders this with retention (webapp.runs.retention): deleted first, or protected
        if type(checkpoint).objects.select_for_update().get(pk=checkpoint.pk).deleted_at is not None:
            deleted = f"the step-{checkpoint.step} checkpoint was deleted by the retention policy"
            raise ImportRejected("invalid input", {"checkpoint": [deleted]})
        job = ScoringJob.objects.create(dataset=dataset, checkpoint=checkpoint, created_by=user)
        sender.record(
            "workers.tasks.score_dataset",
            [job.id],
            queue="short",
            subject=sender.Subject.SCORING,
            subject_id=job.id,
        )
    return job


def pair_rows_for_scoring(dataset: Dataset, chunk: int = 2000):
    """Every pair (kept or not: the margin filter may run on any version), as the trainers' rows.
    Read in chunks by row number, each query fetched whole: no cursor stays open while the caller
    writes scores (on SQLite a write from inside an open read snapshot fails with "database is
    locked" as soon as another connection has committed, e.g. a run logging metrics)."""
    fields = ["id", "row", "prompt", "chosen", "rejected", "source"]
    after = -1
    while True:
        rows = list(
            PreferencePair.objects.filter(dataset=dataset, row__gt=after)
            .order_by("row")
            .values(*fields)[:chunk]
        )
        for row in rows:
            after = row.pop("row")
            yield row
        if len(rows) < chunk:
            return


def pair_scores_record(checkpoint_id: int, scores: list[tuple[int, float, float]]) -> None:
    """Store scores, replacing earlier ones of the same checkpoint (a re-run after a crash)."""
    rows = [
        PairScore(pair_id=int(pid), checkpoint_id=checkpoint_id, chosen=c, rejected=r, margin=c - r)
        for pid, c, r in scores
    ]
    PairScore.objects.bulk_create(
        rows, batch_size=2000, update_conflicts=True, unique_fields=["checkpoint", "pair"],
        update_fields=["chosen", "rejected", "margin"],
    )  # fmt: skip
