"""Issue 12.5 on the run page in headless Chromium: a waiting run names the run it waits for, can be
cancelled, and the page follows it when its parent ends."""

import pytest

from tests.conftest import wait_for
from tests.workers.test_waiting_runs import SFT, child_of
from webapp.runs import services


@pytest.fixture
def waiting_child(live_server, alice, project):
    """A queued SFT parent (no worker) and its waiting RL child, made before the browser starts."""
    from rest_framework.authtoken.models import Token

    parent = services.run_create(user=alice, project=project, name="sft", kind="sft", config=SFT, queue="cpu")
    child = child_of(alice, project, parent)
    return {"parent": parent, "child": child, "token": Token.objects.get_or_create(user=alice)[0].key}


@pytest.mark.slow
def test_the_run_page_names_the_parent_and_follows_the_child_when_the_parent_is_cancelled(
    live_server, waiting_child, browser
):
    """While Playwright runs, the test acts through the API only (tests/ui/test_run_page_browser.py)."""
    import requests

    from tests.ui.test_run_page_browser import login, new_page

    parent, child = waiting_child["parent"], waiting_child["child"]
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{child.pk}/")
    note = page.locator('[data-testid="waiting-note"]')
    assert note.is_visible() and note.inner_text() == f"waiting for run #{parent.pk} (queued)"
    assert page.get_attribute('[data-testid="waiting-link"]', "href") == f"/runs/{parent.pk}/"
    assert page.text_content('[data-testid="status-badge"]') == "waiting"
    assert page.locator('[data-testid="cancel-button"]').is_visible()  # a waiting run can be cancelled

    headers = {"Authorization": f"Token {waiting_child['token']}"}
    assert (
        requests.post(f"{live_server.url}/api/runs/{parent.pk}/cancel/", headers=headers).status_code == 200
    )
    # the page polls a waiting run: it follows the child to failed, with the reason, and drops the note
    wait_for(
        lambda: page.text_content('[data-testid="status-badge"]') == "failed", 20, message="failed badge"
    )
    assert not note.is_visible()
    assert f"init_from_run {parent.pk} ended cancelled" in page.inner_text('[data-testid="run-error"]')
    assert not errors, errors
