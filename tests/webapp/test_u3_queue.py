"""Issue 16 point 5: the queue view's order and visibility, on real queued runs (each with its outbox
message, as a launch writes it) and real worker-registry rows (written by the registry's own report).

Alice and bob share the cpu queue. The order is first in, first out over the runs' newest messages:
a resumed run goes to the back. Bob's runs are counted for alice, never named."""

from __future__ import annotations

import pytest

from tests.conftest import NPG_CONFIG
from webapp.fleet.services import report_upsert
from webapp.outbox.models import Message
from webapp.projects.services import project_create
from webapp.runs import services
from webapp.runs.models import Run
from webapp.runs.queue import queues_overview, run_queue_position
from workers.registry import build_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_project(bob):
    return project_create(user=bob, name="bob-lab")


def launch(user, project, name: str, queue: str = "cpu") -> Run:
    return services.run_create(
        user=user, project=project, name=name, kind="tabular", config=NPG_CONFIG, queue=queue
    )


@pytest.fixture
def lineup(alice, bob, project, bob_project):
    """Launched in this order on cpu: a1, b1, a2, b2, b3, a3; and a4 on short."""
    runs = {}
    for name, user, proj in (("a1", alice, project), ("b1", bob, bob_project), ("a2", alice, project),
                             ("b2", bob, bob_project), ("b3", bob, bob_project), ("a3", alice, project)):  # fmt: skip
        runs[name] = launch(user, proj, name)
    runs["a4"] = launch(alice, project, "a4", queue="short")
    return runs


def waiting_names(queue: dict) -> list:
    return [e["name"] if e["named"] else (e["first"], e["last"], e["text"]) for e in queue["waiting"]]


def by_queue(overview: list[dict]) -> dict[str, dict]:
    return {q["queue"]: q for q in overview}


def test_every_launch_has_a_message_and_positions_are_fifo(alice, bob, lineup):
    # the order the workers take them in is the messages' order: check the fixture made it so
    ids = [
        Message.objects.get(subject="run", subject_id=lineup[n].pk).pk
        for n in ("a1", "b1", "a2", "b2", "b3", "a3")
    ]
    assert ids == sorted(ids)
    cpu = by_queue(queues_overview(alice))["cpu"]
    assert cpu["waiting_count"] == 6 and cpu["waiting_named"] == 3
    assert waiting_names(cpu) == ["a1", (2, 2, "1 run of other projects"), "a2",
                                  (4, 5, "2 runs of other projects"), "a3"]  # fmt: skip
    assert [e["position"] for e in cpu["waiting"] if e["named"]] == [1, 3, 6]
    # bob sees the same order with the names the other way round
    assert waiting_names(by_queue(queues_overview(bob))["cpu"]) == [
        (1, 1, "1 run of other projects"), "b1", (3, 3, "1 run of other projects"), "b2", "b3",
        (6, 6, "1 run of other projects"),
    ]  # fmt: skip
    assert waiting_names(by_queue(queues_overview(alice))["short"]) == ["a4"]

    position = run_queue_position(lineup["a3"], alice)
    assert (position["queue"], position["position"], position["total"]) == ("cpu", 6, 6)
    assert position["ahead_other_projects"] == 3
    assert [r["name"] for r in position["ahead_named"]] == ["a1", "a2"]
    assert run_queue_position(lineup["b1"], bob)["position"] == 2


def test_a_resumed_run_goes_to_the_back_and_a_running_one_leaves_the_line(alice, lineup):
    a1 = lineup["a1"]
    assert services.run_claim(a1.pk, a1.attempt, "host-1")  # a worker took it: running, not waiting
    cpu = by_queue(queues_overview(alice))["cpu"]
    assert [r["name"] for r in cpu["running"]] == ["a1"]
    assert cpu["waiting_count"] == 5
    assert run_queue_position(Run.objects.get(pk=a1.pk), alice) is None

    a2 = lineup["a2"]
    services.run_request_cancel(Run.objects.get(pk=a2.pk))
    services.run_resume(Run.objects.get(pk=a2.pk))  # a new attempt, a new message: the back of the line
    cpu = by_queue(queues_overview(alice))["cpu"]
    assert waiting_names(cpu) == [(1, 3, "3 runs of other projects"), "a3", "a2"]
    assert run_queue_position(Run.objects.get(pk=a2.pk), alice)["position"] == 5


def test_a_project_filter_names_only_that_project(alice, project, lineup):
    other = project_create(user=alice, name="alice-other")
    launch(alice, other, "c1")
    everything = by_queue(queues_overview(alice))["cpu"]
    assert [e["name"] for e in everything["waiting"] if e["named"]] == ["a1", "a2", "a3", "c1"]
    only = by_queue(queues_overview(alice, project.pk))["cpu"]
    assert waiting_names(only)[-1] == (7, 7, "1 run of other projects")


def test_workers_with_their_slots_from_the_registry(alice, lineup):
    report_upsert(**build_report(name="cpu1@test-host", queues=["cpu", "short"], slots=3))
    report_upsert(**build_report(name="gpu1@test-host", queues=["gpu"], slots=1))
    queues = by_queue(queues_overview(alice))
    assert [(w["name"], w["slots"]) for w in queues["cpu"]["workers"]] == [("cpu1@test-host", 3)]
    assert queues["cpu"]["slots"] == 3 and queues["short"]["slots"] == 3
    assert queues["gpu"]["slots"] == 1 and queues["eval"]["workers"] == []
    assert list(queues)[:5] == ["control", "short", "cpu", "gpu", "eval"]
    assert run_queue_position(lineup["a1"], alice)["slots"] == 3


def test_the_api(api, bob_api, alice, project, lineup):
    body = api.get("/api/queues/").json()
    cpu = next(q for q in body if q["queue"] == "cpu")
    assert [e.get("name") for e in cpu["waiting"]] == ["a1", None, "a2", None, "a3"]
    assert api.get(f"/api/queues/?project={project.pk}").status_code == 200
    refused = bob_api.get(f"/api/queues/?project={project.pk}")  # not bob's: as if it did not exist
    assert refused.status_code == 400 and "project" in refused.json()["errors"]
    assert api.get("/api/queues/?project=abc").status_code == 400

    state = api.get(f"/api/runs/{lineup['a2'].pk}/queue-position/").json()
    assert state["status"] == "queued"
    assert (state["queued"]["position"], state["queued"]["total"], state["queued"]["queue"]) == (3, 6, "cpu")
    assert state["queued"]["ahead_other_projects"] == 1
    assert bob_api.get(f"/api/runs/{lineup['a2'].pk}/queue-position/").status_code == 404
    running = lineup["a1"]
    services.run_claim(running.pk, running.attempt, "h")
    assert api.get(f"/api/runs/{running.pk}/queue-position/").json()["queued"] is None


def test_the_page(client, alice, project, lineup):
    client.force_login(alice)
    page = client.get(f"/projects/{project.pk}/queues/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "a1" in html and "b1" not in html and "2 runs of other projects" in html
    fragment = client.get(f"/projects/{project.pk}/queues/?fragment=1").content.decode()
    assert "<html" not in fragment and 'data-queue="cpu"' in fragment
    run_page = client.get(f"/runs/{lineup['a2'].pk}/").content.decode()
    assert 'data-testid="queue-position">3<' in run_page and 'data-testid="queue-total">6<' in run_page


def test_jobs_that_take_a_slot_are_in_the_line(alice, bob, project, bob_project, lineup):
    """A scoring job queues on short like a run (its outbox message), after what was launched before it;
    a job a worker took runs."""
    from webapp.datasets.models import Dataset, ScoringJob
    from webapp.datasets.services import scoring_job_create
    from webapp.runs.models import Checkpoint

    def job(user, proj):
        prefs = Dataset.objects.create(project=proj, name="prefs", kind="preference", status="ready")
        reward = Run.objects.create(project=proj, name="rm", kind="reward", status="succeeded")
        checkpoint = Checkpoint.objects.create(run=reward, step=5, path="/nowhere")
        return scoring_job_create(user=user, dataset=prefs, checkpoint=checkpoint)

    mine, theirs = job(alice, project), job(bob, bob_project)
    short = by_queue(queues_overview(alice))["short"]
    assert waiting_names(short) == ["a4", f"prefs by run {mine.checkpoint.run_id} step 5",
                                    (3, 3, "1 scoring job of other projects")]  # fmt: skip
    assert [e.get("kind") for e in short["waiting"]] == ["run", "scoring", None]
    ScoringJob.objects.filter(pk=theirs.pk).update(status="running")
    short = by_queue(queues_overview(alice))["short"]
    assert short["waiting_count"] == 2 and short["running_other"] == 1 and short["running"] == []
