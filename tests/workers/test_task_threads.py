"""Torch threads per task (issue 16 point 1): each model task starts with cores // slots threads,
whatever the previous task in the same process set; the housekeeping and imports are left alone."""

from __future__ import annotations

import pytest
import torch
from celery.signals import celeryd_init, task_prerun

import workers.tasks  # noqa: F401  (registers the tasks)
from workers import task_threads
from workers.celery import app


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("ORLAB_TASK_THREADS", raising=False)
    monkeypatch.setattr(task_threads, "_slots", None)
    yield
    torch.set_num_threads(before)


def _start_task(name: str) -> None:
    task = app.tasks[name]
    task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})


def test_budget_is_cores_over_slots_and_at_least_one(monkeypatch):
    assert task_threads.threads_per_task(slots=2, cpus=8) == 4
    assert task_threads.threads_per_task(slots=3, cpus=2) == 1
    monkeypatch.setenv("ORLAB_TASK_THREADS", "3")
    assert task_threads.threads_per_task(slots=2, cpus=8) == 3


def test_a_setting_left_by_one_task_does_not_reach_the_next(monkeypatch):
    monkeypatch.setattr(task_threads, "available_cpus", lambda: 4)
    celeryd_init.send(
        sender="w@h", instance=None, conf=app.conf, options={"concurrency": 2, "pool": "prefork"}
    )
    _start_task("workers.tasks.execute_run")
    assert torch.get_num_threads() == 2
    torch.set_num_threads(4)  # what a trainer with `threads: 4` does inside its run
    _start_task("workers.tasks.evaluate_checkpoint")  # the next task in the same pool process
    assert torch.get_num_threads() == 2


def test_solo_pool_counts_one_slot_and_light_tasks_are_left_alone(monkeypatch):
    monkeypatch.setattr(task_threads, "available_cpus", lambda: 2)
    celeryd_init.send(
        sender="w@h", instance=None, conf=app.conf, options={"concurrency": None, "pool": "solo"}
    )
    torch.set_num_threads(1)
    _start_task("workers.tasks.housekeeping")
    assert torch.get_num_threads() == 1
    _start_task("workers.tasks.score_dataset")
    assert torch.get_num_threads() == 2
