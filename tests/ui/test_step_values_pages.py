"""The step-value browser: a run-produced dataset's solutions with per-step values, filters, the
chart, row expansion in Chromium, and other users kept out."""

import json
import re

import pytest

from webapp.datasets.models import Dataset
from webapp.datasets.step_values import step_values_publish
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def step_dataset(project, alice, tmp_path):
    run = Run.objects.create(
        project=project, name="dapo run", kind="dapo", status="running", created_by=alice
    )
    rows = []
    for i in range(120):
        correct = i % 3 == 0
        steps = [f"{i}+1+2 = {i + 1}+2", f"= {i + 3}", f"\\boxed{{{i + 3 if correct else i}}}"]
        values = [0.5, 0.75 if correct else 0.25, 1.0 if correct else 0.0, 1.0 if correct else 0.0]
        rows.append({"prompt": f"{i}+1+2=<b>", "answer": str(i + 3), "solution": "\n".join(steps), "steps": steps,
                     "values": values, "correct": correct, "verdict": "correct" if correct else "wrong"})  # fmt: skip
    path = tmp_path / "values.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return step_values_publish(
        run, kind="step_values", name="dapo-values", path=path, meta={"mc_rollouts": 8}
    )


def test_solution_list_filters_pages_and_escapes(client_alice, step_dataset):
    url = f"/datasets/{step_dataset.pk}/solutions/"
    page = client_alice.get(url).content.decode()
    assert "120 solutions" in page and page.count('data-testid="solution-row"') == 50
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<main", 1)[1]  # prompts are escaped
    assert "values 0.50 0.75 1.00 1.00" in page  # the sparkline's label carries the curve
    badges = re.findall(r'<span class="badge status-(\w+)">(\w+)</span>', page)
    assert badges[:3] == [("succeeded", "correct"), ("failed", "wrong"), ("failed", "wrong")], badges[:3]
    correct = client_alice.get(url + "?outcome=correct").content.decode()
    assert "40 solutions" in correct and "values 0.50 0.25" not in correct
    wrong = client_alice.get(url + "?outcome=wrong&page=1").content.decode()
    assert "80 solutions" in wrong and "outcome=wrong&page=2" in wrong  # the filter survives paging
    detail = client_alice.get(f"/datasets/{step_dataset.pk}/").content.decode()
    assert f'href="/datasets/{step_dataset.pk}/solutions/"' in detail and "dapo run" in detail


def test_other_users_and_other_kinds_get_404(client_bob, client_alice, step_dataset, project):
    assert client_bob.get(f"/datasets/{step_dataset.pk}/solutions/").status_code == 404
    other = Dataset.objects.create(project=project, name="prefs", kind="preference", status="ready")
    assert client_alice.get(f"/datasets/{other.pk}/solutions/").status_code == 404


@pytest.mark.slow
def test_browser_shows_the_chart_and_expands_a_solution(browser, live_server, step_dataset):
    page = browser.new_page()
    page.goto(f"{live_server.url}/datasets/{step_dataset.pk}/solutions/?outcome=correct")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_selector("[data-testid=value-chart] .main-svg")
    assert page.get_attribute("[data-testid=value-chart]", "data-traces") == "2"  # correct and wrong curves
    first = page.locator("[data-testid=solution-row]").first
    steps = page.locator("[data-testid=solution-steps]").first
    assert steps.is_hidden()
    first.focus()
    page.keyboard.press("Enter")
    assert steps.is_visible() and steps.locator("[data-testid=step-row]").count() == 3
    assert "0.25" in steps.inner_text()  # V rises 0.50 -> 0.75 on the first step of a correct solution


def test_api_lists_solutions_with_values_and_rejects_bad_filters(api, bob_api, step_dataset, project):
    url = f"/api/datasets/{step_dataset.pk}/solutions/"
    body = api.get(url + "?correct=true").json()
    assert body["count"] == 40
    first = body["results"][0]
    assert first["row"] == 0 and first["values"] == [0.5, 0.75, 1.0, 1.0] and len(first["steps"]) == 3
    bad = api.get(url + "?correct=maybe")
    assert bad.status_code == 400 and "correct" in bad.json()["errors"]
    assert bob_api.get(url).status_code == 404
    other = Dataset.objects.create(project=project, name="prefs", kind="preference", status="ready")
    assert api.get(f"/api/datasets/{other.pk}/solutions/").status_code == 400
