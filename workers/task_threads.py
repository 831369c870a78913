"""CPU threads per task, set at the start of every task that runs torch and never carried over.

A worker with N slots on C cores gives each task C // N threads (at least 1), or ORLAB_TASK_THREADS
when the operator sets it. Without this, torch uses every core in every slot (2 trainings on 2 cores
run 4 busy threads), and a trainer that calls ``torch.set_num_threads(cfg.threads)`` leaves that
setting to whatever task the same pool process runs next: the demo saw one RL run 5-30x slower than
its sibling. The budget is applied before each task (so nothing a previous task set survives) and
the trainer's own ``threads`` setting still wins inside its run. BLAS pools (threadpoolctl) get the
same budget; child processes inherit OMP_NUM_THREADS/MKL_NUM_THREADS.
"""

from __future__ import annotations

import logging
import os

from celery.signals import celeryd_init, task_prerun

log = logging.getLogger(__name__)

# tasks that run model code (the housekeeping and imports never import torch for this)
TORCH_TASKS = frozenset(
    {"workers.tasks.execute_run", "workers.tasks.score_dataset", "workers.tasks.evaluate_checkpoint"}
)

_slots: int | None = None


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_task(slots: int | None = None, cpus: int | None = None) -> int:
    """The budget of one task: ORLAB_TASK_THREADS, else cores // slots (at least 1)."""
    explicit = os.environ.get("ORLAB_TASK_THREADS", "").strip()
    if explicit:
        return max(1, int(explicit))
    slots = max(1, slots or _slots or 1)
    return max(1, (cpus or available_cpus()) // slots)


@celeryd_init.connect
def _remember_slots(sender=None, conf=None, options=None, **_kwargs) -> None:
    """The worker's concurrency, read in the main process before the pool forks (the children
    inherit it). --pool=solo/threads with no --concurrency count as one slot."""
    global _slots
    options = options or {}
    concurrency = options.get("concurrency")
    pool = str(options.get("pool") or "")
    _slots = int(concurrency) if concurrency else (1 if pool in ("solo", "threads") else available_cpus())
    budget = threads_per_task(_slots)
    # processes a task starts (torchrun ranks, reward scoring pools) read these at their start
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(budget))


def apply_budget(threads: int) -> None:
    """Set torch's intra-op threads and the BLAS pools to ``threads`` (torch imported here: only
    model tasks call it)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except Exception:  # no BLAS pool loaded yet: nothing to limit
        log.debug("threadpoolctl could not set %s threads", threads, exc_info=True)


@task_prerun.connect
def _budget_before_task(sender=None, task=None, **_kwargs) -> None:
    name = getattr(task, "name", None) or getattr(sender, "name", None)
    if name in TORCH_TASKS:
        apply_budget(threads_per_task())
