"""Issue 16 point 5 in headless Chromium: the queue page names the project's queued runs in the
workers' order, counts the other projects' runs, lists the workers with their slots, and follows new
launches live; a queued run's page says "queued: position N of M on Q" and follows the line as the
run ahead of it leaves."""

from __future__ import annotations

import pytest

from tests.conftest import NPG_CONFIG, wait_for
from webapp.fleet.services import report_upsert
from webapp.projects.services import project_create
from webapp.runs import services
from workers.registry import build_report

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def launch(user, project, name: str):
    return services.run_create(
        user=user, project=project, name=name, kind="tabular", config=NPG_CONFIG, queue="cpu"
    )


@pytest.fixture
def lineup(live_server, alice, bob, project):
    """No worker takes from cpu (nothing starts); a registry row for a worker of another queue."""
    bob_project = project_create(user=bob, name="bob-lab")
    report_upsert(**build_report(name="short1@test-host", queues=["short"], slots=4))
    return {
        "a1": launch(alice, project, "a1"),
        "b1": launch(bob, bob_project, "b1"),
        "b2": launch(bob, bob_project, "b2"),
        "a2": launch(alice, project, "a2"),
    }


def test_the_queue_page_and_the_run_page_note(live_server, browser, alice, project, lineup):
    import requests

    from tests.ui.test_run_page_browser import login, new_page, token_for

    headers = {"Authorization": f"Token {token_for(alice)}", "Connection": "close"}
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/projects/{project.pk}/queues/")
    cpu = page.locator('[data-testid="queue"][data-queue="cpu"]')
    assert cpu.locator('[data-testid="queue-waiting-item"]').all_inner_texts() == [
        f"run #{lineup['a1'].pk} a1",
        f"run #{lineup['a2'].pk} a2",
    ]
    assert (
        cpu.locator('[data-testid="queue-waiting-others"]').inner_text()
        == "positions 2–3: 2 runs of other projects"
    )
    assert "b1" not in page.inner_text("main")
    assert cpu.locator('[data-testid="queue-no-workers"]').is_visible()
    short = page.locator('[data-testid="queue"][data-queue="short"]')
    assert short.locator('[data-testid="queue-worker"]').inner_text() == "short1@test-host 4 slots"

    # a launch through the API shows up without a reload
    a3 = requests.post(
        f"{live_server.url}/api/runs/",
        json={"project": project.pk, "name": "a3", "kind": "tabular", "config": NPG_CONFIG, "queue": "cpu"},
        headers=headers,
    ).json()
    wait_for(lambda: cpu.locator('[data-testid="queue-waiting-item"]').count() == 3, 15, message="a3 listed")
    assert cpu.locator('[data-testid="queue-waiting-item"]').nth(2).inner_text() == f"run #{a3['id']} a3"

    # the run page of a2: position 4 of 5, two of the runs ahead are bob's
    page.goto(f"{live_server.url}/runs/{lineup['a2'].pk}/")
    note = page.locator('[data-testid="queue-note"]')
    assert (
        note.inner_text()
        == "queued: position 4 of 5 on cpu (2 of other projects ahead); no worker takes from this queue"
    )
    # a1 (ahead) is cancelled: the note follows (run.js polls the queued run, the note reads its position)
    assert (
        requests.post(f"{live_server.url}/api/runs/{lineup['a1'].pk}/cancel/", headers=headers).status_code
        == 200
    )
    wait_for(lambda: page.inner_text('[data-testid="queue-position"]') == "3", 15, message="position 3")
    assert page.inner_text('[data-testid="queue-total"]') == "4"
    # cancelled itself: the note goes
    assert (
        requests.post(f"{live_server.url}/api/runs/{lineup['a2'].pk}/cancel/", headers=headers).status_code
        == 200
    )
    wait_for(lambda: not note.is_visible(), 15, message="note hidden")
    assert not errors, errors
