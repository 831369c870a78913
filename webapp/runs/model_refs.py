"""``model_path: "checkpoint:<id>"``: start a run from a policy checkpoint of a run in the same project
(issue 11: a model is "tiny", a name in the workers' catalogue, or such a checkpoint; never a path).

Launch checks the reference (the checkpoint exists in the run's project, belongs to a run whose trainer
declares policy checkpoints (TrainerSpec.policy_checkpoints: sft, rl, dapo), was not deleted by
retention); the worker turns it into the checkpoint's folder only when a worker wrote that folder for
that run (webapp.runs.checkpoint_paths). An id of another team's checkpoint gets the same answer as an
id that does not exist."""

from __future__ import annotations

import re
from typing import Any

from webapp.runs import capabilities
from webapp.runs.models import Checkpoint

PREFIX = "checkpoint:"
_REF = re.compile(r"checkpoint:([1-9][0-9]{0,15})")


def is_checkpoint_ref(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def checkpoint_ref_id(name: Any) -> int | None:
    """The id in ``checkpoint:<id>``; None for anything else (a malformed reference included)."""
    match = _REF.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


def model_ref_errors(config: dict, project) -> dict[str, list[str]]:
    """Field errors of a ``checkpoint:<id>`` model_path launched in ``project`` ({} when fine or when
    model_path is not a checkpoint reference)."""
    name = config.get("model_path")
    if not is_checkpoint_ref(name):
        return {}
    ident = checkpoint_ref_id(name)
    if ident is None:
        return {"config.model_path": ["checkpoint:<id> takes the id of a checkpoint (a positive integer)"]}
    checkpoint = Checkpoint.objects.select_related("run").filter(pk=ident, run__project=project).first()
    if checkpoint is None:
        return {"config.model_path": [f"no checkpoint {ident} in project {project.name}"]}
    if not capabilities.policy_checkpoints(checkpoint.run.kind):
        return {"config.model_path": [f"checkpoint {ident} is of a {checkpoint.run.kind} run, not a policy"]}
    if checkpoint.deleted_at is not None:
        return {"config.model_path": [f"checkpoint {ident} was deleted by the retention policy"]}
    return {}


def model_ref_directory(name: str, project_id: int) -> str:
    """The folder a worker loads for ``checkpoint:<id>`` (raises when the checkpoint is not a
    worker-written one of a run in ``project_id``)."""
    from webapp.runs.checkpoint_paths import UntrustedCheckpoint, worker_checkpoint_dir

    ident = checkpoint_ref_id(name)
    checkpoint = Checkpoint.objects.filter(pk=ident, run__project_id=project_id).first() if ident else None
    if checkpoint is None:
        raise UntrustedCheckpoint(f"model_path {name!r}: no such checkpoint in this run's project")
    return str(worker_checkpoint_dir(checkpoint, project_id=project_id))
