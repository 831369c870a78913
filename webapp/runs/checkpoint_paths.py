"""Which checkpoint directories a worker may read (issue 11: no user-supplied path reaches a worker).

A worker loads model weights, optimizer state and DeepSpeed engine state (which DeepSpeed unpickles)
from a checkpoint directory, so the directory must be one a worker of this platform wrote itself:
``<ORLAB_ARTIFACTS>/runs/<run id>/attempt-<n>/checkpoint-<step>`` of the checkpoint's own run
(webapp.runs.retention.owned_directory: resolved, no symlink, inside the store). Uploaded checkpoints of
external runs live under ``runs/<id>/uploads/`` and are never loaded by a worker.

The launch and API checks already keep other paths out; this is the check at load time, so a row that
holds any other path (an old record, a database edited by hand) fails the job instead of being read.
The error says the same whatever the path is (existing or not, another team's or not)."""

from __future__ import annotations

from pathlib import Path

from webapp.runs.models import Checkpoint
from webapp.runs.retention import owned_directory


class UntrustedCheckpoint(RuntimeError):
    """A checkpoint whose directory is not one a worker wrote for its run in the artifact store."""


def worker_checkpoint_dir(checkpoint: Checkpoint, *, project_id: int | None = None) -> Path:
    """The directory of ``checkpoint`` to load, when a worker wrote it for the checkpoint's own run
    (and that run is in project ``project_id``, when given). Raises UntrustedCheckpoint otherwise."""
    directory = owned_directory(checkpoint.run_id, checkpoint.path)
    if project_id is not None:
        from webapp.runs.models import Run

        in_project = Run.objects.filter(pk=checkpoint.run_id, project_id=project_id).exists()
    else:
        in_project = True
    if directory is None or not in_project:
        raise UntrustedCheckpoint(
            f"checkpoint {checkpoint.pk} (step {checkpoint.step}) is not one a worker wrote for this "
            "project's runs; refusing to load it"
        )
    return directory
