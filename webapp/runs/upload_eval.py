"""Evaluating an external run's uploaded checkpoints (issue 15 point 4): which evaluator a run's
checkpoints get and which directory a worker loads.

A worker run's checkpoints are loaded from the directory a worker wrote (webapp.runs.checkpoint_paths).
An external run's checkpoint is a tar archive the server itself unpacked into
``<ORLAB_ARTIFACTS>/runs/<id>/uploads/checkpoint-<step>`` (webapp.runs.checkpoint_upload): still no path a
user chose, but files a user chose. Loading those for an evaluation is safe only without code and
without pickles: the policy is loaded by ``transformers`` with ``local_files_only`` and no
``trust_remote_code`` (no repository code runs), and here the directory must hold its weights as
safetensors (``from_pretrained`` prefers them) and no pickle-format weights beside them (``*.bin``,
``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``: a torch.load of a hostile pickle runs code). Anything else
is refused with the same words, whatever the path is.

``EXTERNAL_EVALUATION`` says whether the worker's evaluation task reads its checkpoint directory and
evaluator from here (workers.tasks.evaluate_checkpoint); until it does, an external run's checkpoints
are not offered for evaluation (a request is a 400, and no policy can be set), so nothing is queued
that the worker would fail."""

from __future__ import annotations

from pathlib import Path

from webapp.runs import capabilities
from webapp.runs.checkpoint_paths import UntrustedCheckpoint, worker_checkpoint_dir
from webapp.runs.models import Checkpoint, Run
from webapp.runs.retention import CHECKPOINT_DIR, run_artifact_dir

#: workers.tasks.evaluate_checkpoint loads through evaluation_checkpoint_dir / evaluator_for (see above)
EXTERNAL_EVALUATION = True
#: the evaluator of uploaded policies: the same one the policy trainers declare (trainers/*/spec.py)
EXTERNAL_EVALUATOR = "trainers.eval.run:evaluate_checkpoint"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
UPLOADS = "uploads"  # webapp.runs.checkpoint_upload.UPLOADS


def evaluates(kind: str) -> bool:
    """A run of ``kind`` has checkpoints a worker can evaluate on a problems dataset."""
    if kind == Run.EXTERNAL:
        return EXTERNAL_EVALUATION
    return capabilities.evaluates_checkpoints(kind)


def evaluator_for(kind: str):
    """The evaluator of ``kind``'s checkpoints: its trainer's, or for an external run the policy
    trainers' (trainers.eval.run.evaluate_checkpoint)."""
    import importlib

    from trainers.base import get_spec

    if kind == Run.EXTERNAL:
        module, _, name = EXTERNAL_EVALUATOR.partition(":")
        return getattr(importlib.import_module(module), name)
    return get_spec(kind).evaluate_fn()


def uploaded_checkpoint_dir(checkpoint: Checkpoint) -> Path:
    """The directory of an external run's uploaded ``checkpoint`` when it is the server's own unpacking
    of the upload (``runs/<run>/uploads/checkpoint-<step>``, resolved, no symlink) with safetensors
    weights and no pickles. Raises UntrustedCheckpoint otherwise."""
    refused = UntrustedCheckpoint(
        f"checkpoint {checkpoint.pk} (step {checkpoint.step}) is not an uploaded checkpoint with "
        "safetensors weights and no pickle files; refusing to load it"
    )
    if not checkpoint.path:
        raise refused
    candidate = Path(checkpoint.path)
    try:
        if not candidate.is_absolute() or candidate.is_symlink():
            raise refused
        resolved = candidate.resolve(strict=True)
        uploads = (run_artifact_dir(checkpoint.run_id) / UPLOADS).resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused from None
    if resolved.parent != uploads or not resolved.is_dir() or not CHECKPOINT_DIR.fullmatch(resolved.name):
        raise refused
    files = [p for p in resolved.rglob("*") if p.is_file() or p.is_symlink()]
    if any(p.is_symlink() for p in files):  # the upload refuses links; a later one is not ours
        raise refused
    if any(p.name.lower().endswith(PICKLE_SUFFIXES) for p in files):
        raise refused
    if not any(p.suffix == ".safetensors" for p in files) or not (resolved / "config.json").is_file():
        raise refused
    return resolved


def evaluation_checkpoint_dir(checkpoint: Checkpoint) -> Path:
    """The directory an evaluation of ``checkpoint`` loads: a worker run's own (checkpoint_paths), or an
    external run's upload (:func:`uploaded_checkpoint_dir`)."""
    kind = Run.objects.filter(pk=checkpoint.run_id).values_list("kind", flat=True).first()
    if kind == Run.EXTERNAL:
        return uploaded_checkpoint_dir(checkpoint)
    return worker_checkpoint_dir(checkpoint)
