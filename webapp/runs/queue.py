"""The queue view (issue 16 point 5): per Celery queue, what runs, what waits and in which order, and
the workers that take from it.

The order is the one the workers take things in. Every task message goes through the outbox
(webapp.outbox): ``deliver`` sends unsent rows in primary-key order, the brokers keep a queue first in,
first out, and a worker claims the object a message names (webapp.outbox.sender.claim, or
webapp.runs.services.run_claim for runs). So what waits on a queue, in order, is the objects still
waiting for their newest message on it (a resumed run's new message puts it at the back), by that
message's id. Evaluations, scoring jobs and dataset imports take a worker slot as runs do, so they are
counted in the same order.

What waits: runs ``queued``, evaluations and scoring jobs ``queued``, datasets ``importing`` whose
message no worker claimed yet. What runs: runs ``running``, evaluations and scoring jobs ``running``,
imports whose message a worker claimed. A run ``waiting`` for another run has no message yet (it is
queued when its parent ends): it is in no queue, and its page names the run it waits for instead.

Who sees what: everything is counted (a user must see how much waits ahead), but only the objects of
the projects the caller is shown are named; the others are runs (or jobs) "of other projects". A
multi-node run sends one message per node; the newest stands for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.urls import reverse

from webapp.datasets.models import Dataset, ScoringJob
from webapp.fleet.selectors import fresh_reports
from webapp.outbox.models import Message
from webapp.projects.selectors import project_list
from webapp.runs.models import Evaluation, Run

Subject = Message.Subject
KIND_LABELS = {"run": ("run", "runs"), "evaluation": ("evaluation", "evaluations"),
               "scoring": ("scoring job", "scoring jobs"), "import": ("import", "imports")}  # fmt: skip


@dataclass
class Item:
    """One thing on a queue: a run, an evaluation, a scoring job or a dataset import."""

    kind: str  # run | evaluation | scoring | import
    id: int
    project_id: int
    name: str
    queue: str
    state: str  # waiting | running
    order: int | None  # the id of its newest message (None: sent before the outbox; it goes last)
    created_at: Any
    run_id: int | None = None  # the run an evaluation belongs to (its page)

    def sort_key(self):
        return (self.order is None, self.order or 0, self.created_at, self.id)


def _newest_message(subject: str):
    return Subquery(
        Message.objects.filter(subject=subject, subject_id=OuterRef("pk")).order_by("-pk").values("pk")[:1]
    )


def _newest_message_field(subject: str, field: str):
    return Subquery(
        Message.objects.filter(subject=subject, subject_id=OuterRef("pk")).order_by("-pk").values(field)[:1]
    )


def _runs() -> list[Item]:
    rows = (
        Run.objects.filter(status__in=(Run.Status.QUEUED, Run.Status.RUNNING))
        .annotate(
            message=_newest_message(Subject.RUN), message_queue=_newest_message_field(Subject.RUN, "queue")
        )
        .values_list("id", "project_id", "name", "queue", "status", "message", "message_queue", "created_at")
    )
    return [
        Item(
            "run",
            pk,
            project,
            name,
            mqueue if status == Run.Status.QUEUED and mqueue else queue,
            "waiting" if status == Run.Status.QUEUED else "running",
            message,
            created,
            run_id=pk,
        )  # fmt: skip
        for pk, project, name, queue, status, message, mqueue, created in rows
    ]


def _evaluations() -> list[Item]:
    rows = (
        Evaluation.objects.filter(status__in=(Evaluation.Status.QUEUED, Evaluation.Status.RUNNING))
        .annotate(message=_newest_message(Subject.EVALUATION), mqueue=_newest_message_field(Subject.EVALUATION, "queue"))
        .values_list("id", "run__project_id", "run_id", "run__name", "step", "benchmark_name", "status",
                     "message", "mqueue", "created_at")
    )  # fmt: skip
    out = []
    for pk, project, run_id, run_name, step, bench, status, message, mqueue, created in rows:
        if mqueue is None:  # recorded during training by the trainer itself: it takes no slot
            continue
        name = f"{run_name} step {step}" + (f" on {bench}" if bench else "")
        state = "waiting" if status == Evaluation.Status.QUEUED else "running"
        out.append(Item("evaluation", pk, project, name, mqueue, state, message, created, run_id=run_id))
    return out


def _scoring_jobs() -> list[Item]:
    rows = (
        ScoringJob.objects.filter(status__in=(ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING))
        .annotate(message=_newest_message(Subject.SCORING), mqueue=_newest_message_field(Subject.SCORING, "queue"))
        .values_list("id", "dataset__project_id", "dataset__name", "checkpoint__run_id", "checkpoint__step",
                     "status", "message", "mqueue", "created_at")
    )  # fmt: skip
    out = []
    for pk, project, dataset, run_id, step, status, message, mqueue, created in rows:
        if mqueue is None:
            continue
        state = "waiting" if status == ScoringJob.Status.QUEUED else "running"
        name = f"{dataset} by run {run_id} step {step}"
        out.append(Item("scoring", pk, project, name, mqueue, state, message, created, run_id=run_id))
    return out


def _imports() -> list[Item]:
    rows = (
        Dataset.objects.filter(status=Dataset.Status.IMPORTING)
        .annotate(
            message=_newest_message(Subject.DATASET),
            mqueue=_newest_message_field(Subject.DATASET, "queue"),
            claimed=_newest_message_field(Subject.DATASET, "claimed_at"),
        )
        .values_list("id", "project_id", "name", "version", "message", "mqueue", "claimed", "created_at")
    )
    return [
        Item(
            "import",
            pk,
            project,
            f"{name} v{version}",
            mqueue,
            "running" if claimed else "waiting",
            message,
            created,
        )  # fmt: skip
        for pk, project, name, version, message, mqueue, claimed, created in rows
        if mqueue is not None
    ]


def queue_items() -> list[Item]:
    return [*_runs(), *_evaluations(), *_scoring_jobs(), *_imports()]


def _url(item: Item) -> str | None:
    if item.kind == "run":
        return reverse("run", args=[item.id])
    if item.kind in ("evaluation", "scoring") and item.run_id:
        return reverse("run", args=[item.run_id])
    return None


def _named(item: Item, position: int | None = None) -> dict[str, Any]:
    out = {
        "kind": item.kind,
        "id": item.id,
        "name": item.name,
        "project": item.project_id,
        "url": _url(item),
    }
    if position is not None:
        out["position"] = position
    return out


def _hidden_text(kinds: dict[str, int]) -> str:
    parts = [f"{n} {KIND_LABELS[k][0 if n == 1 else 1]}" for k, n in kinds.items()]
    return ", ".join(parts) + " of other projects"


def _waiting_entries(waiting: list[Item], shown: set[int]) -> list[dict[str, Any]]:
    """The waiting order with the items of other projects folded into runs of consecutive positions:
    named entries {named: true, position, ...} and {named: false, first, last, count, text}."""
    out: list[dict[str, Any]] = []
    for position, item in enumerate(waiting, start=1):
        if item.project_id in shown:
            out.append({"named": True, **_named(item, position)})
            continue
        if out and not out[-1]["named"]:
            hidden = out[-1]
        else:
            hidden = {"named": False, "first": position, "count": 0, "kinds": {}}
            out.append(hidden)
        hidden["last"] = position
        hidden["count"] += 1
        hidden["kinds"][item.kind] = hidden["kinds"].get(item.kind, 0) + 1
    for entry in out:
        if not entry["named"]:
            entry["text"] = _hidden_text(entry.pop("kinds"))
    return out


def _worker_rows(queue: str, reports) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "host": r.host, "slots": r.slots, "queues": list(r.queues), "gpus": r.visible_gpus}
        for r in reports
        if r.consumes(queue)
    ]


def visible_project_ids(user, project_id: int | None = None) -> set[int]:
    """The projects whose objects are named: ``project_id`` alone when given (the caller checked it is
    one of the user's), else every project of the user."""
    if project_id is not None:
        return {project_id}
    return set(project_list(user=user).values_list("id", flat=True))


def queues_overview(user, project_id: int | None = None, queues: Iterable[str] | None = None) -> list[dict]:
    """Per queue (settings.ORLAB_QUEUES first, then any other queue something is on or a worker takes
    from): workers with their slots, the running and the waiting in the workers' order.

    [{queue, workers: [{name, host, slots, queues, gpus}], slots, running: [named], running_other,
      waiting: [entries of _waiting_entries], waiting_count, waiting_named}]"""
    shown = visible_project_ids(user, project_id)
    items = queue_items()
    reports = fresh_reports()
    names = list(
        dict.fromkeys(
            [
                *(queues or settings.ORLAB_QUEUES),
                *sorted({i.queue for i in items if i.queue}),
                *sorted({q for r in reports for q in r.queues}),
            ]
        )
    )
    if queues is not None:
        names = [q for q in names if q in set(queues)]
    out = []
    for queue in names:
        mine = [i for i in items if i.queue == queue]
        running = sorted((i for i in mine if i.state == "running"), key=Item.sort_key)
        waiting = sorted((i for i in mine if i.state == "waiting"), key=Item.sort_key)
        workers = _worker_rows(queue, reports)
        out.append(
            {
                "queue": queue,
                "workers": workers,
                "slots": sum(w["slots"] for w in workers),
                "running": [_named(i) for i in running if i.project_id in shown],
                "running_other": sum(1 for i in running if i.project_id not in shown),
                "waiting": _waiting_entries(waiting, shown),
                "waiting_count": len(waiting),
                "waiting_named": sum(1 for i in waiting if i.project_id in shown),
            }
        )
    return out


def run_queue_position(run: Run, user) -> dict[str, Any] | None:
    """Where a queued run stands: {queue, position, total, ahead_other_projects, ahead_named, running,
    slots, workers}, counted over every project (only the caller's runs can be named by the page).
    None when the run is not queued (or no longer is by the time of the read)."""
    if run.status != Run.Status.QUEUED:
        return None
    items = queue_items()
    own = next((i for i in items if i.kind == "run" and i.id == run.pk and i.state == "waiting"), None)
    if own is None:
        return None
    waiting = sorted((i for i in items if i.queue == own.queue and i.state == "waiting"), key=Item.sort_key)
    index = next(n for n, i in enumerate(waiting) if i.kind == "run" and i.id == run.pk)
    shown = visible_project_ids(user)
    ahead = waiting[:index]
    workers = _worker_rows(own.queue, fresh_reports())
    return {
        "run": run.pk,
        "queue": own.queue,
        "position": index + 1,
        "total": len(waiting),
        "ahead_named": [_named(i, n + 1) for n, i in enumerate(ahead) if i.project_id in shown],
        "ahead_other_projects": sum(1 for i in ahead if i.project_id not in shown),
        "running": sum(1 for i in items if i.queue == own.queue and i.state == "running"),
        "slots": sum(w["slots"] for w in workers),
        "workers": len(workers),
    }
