"""Issue 14's pages over training in headless Chromium: the prompt x step matrix (heatmap, counts over
time, zero-variance share, CSV), a click on a heatmap cell opening that prompt, its solve rate with
training and evaluation rollouts apart, the word diff of two steps' completions (choosing another step
and another completion), and the distributions page. Screenshots go to /tmp/orlab-prompts-*.png.

The data is stored before the browser starts (``rl_run`` is asked for before ``browser``: an ORM call
made after Playwright starts its event loop in this thread gets a second database connection, which
outlives the test and keeps the test database from being dropped); while Playwright runs, the test
reads through the pages only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.ui.test_compare_browser import login, new_page
from tests.webapp.test_prompt_stats import bad, ok, record

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rl_run(live_server, alice, project):
    from webapp.runs import services

    run = services.run_create(user=alice, project=project, name="rl-prompts", kind="external", config={})
    record(run, 0, {"What is 2+2?": bad(4), "Name a prime.": ok(2) + bad(2), "Hard one": bad(4)})
    record(run, 1, {"What is 2+2?": ok(1) + bad(3), "Name a prime.": ok(4), "Hard one": bad(4)})
    record(
        run,
        2,
        {"What is 2+2?": ok(3) + [("wrong", 0.0, 64, True)], "Name a prime.": ok(4), "Hard one": bad(4)},
    )
    record(run, 2, {"What is 2+2?": ok(2), "Hard one": bad(2)}, phase="eval")
    from webapp.runs.models import RolloutPrompt

    ids = dict(RolloutPrompt.objects.filter(run=run).values_list("text", "pk"))
    return run, ids


def rendered(page, testid: str) -> int:
    wait_for(
        lambda: page.get_attribute(f'[data-testid="{testid}"]', "data-rendered") is not None,
        timeout=20,
        message=f"{testid} drawn",
    )
    return int(page.get_attribute(f'[data-testid="{testid}"]', "data-rendered"))


def test_matrix_to_prompt_to_diff_and_the_distributions(live_server, rl_run, browser):
    run, ids = rl_run
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{run.pk}/prompts/")
    assert rendered(page, "matrix-chart") == 3
    assert rendered(page, "counts-chart") == 3 and rendered(page, "zero-variance-chart") == 3
    assert page.inner_text('[data-testid="count-saturated"]') == "1"  # "Name a prime." (4/4 at step 2)
    assert page.inner_text('[data-testid="count-learning"]') == "1"  # "What is 2+2?" (3/4)
    assert page.inner_text('[data-testid="count-unsolved"]') == "1"  # "Hard one"
    # prompts by first-solved step: the prime (step 0), 2+2 (step 1), the unsolved one last
    assert page.locator('[data-testid="prompt-link"]').all_text_contents() == [
        "Name a prime.",
        "What is 2+2?",
        "Hard one",
    ]
    with page.expect_download() as download:
        page.click('[data-testid="matrix-csv"]')
    csv_text = Path(download.value.path()).read_text().splitlines()
    assert csv_text[0] == "prompt_id,first_solved_step,0,1,2"
    assert csv_text[2] == f"{ids['What is 2+2?']},1,0,0.25,0.75"
    page.screenshot(path="/tmp/orlab-prompts-matrix.png", full_page=True)

    # a click on the cell (row 2 = "What is 2+2?", step 0) opens that prompt with step 0 on the left
    box = page.locator('[data-testid="matrix-chart"] .nsewdrag').first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * (0.5 / 3), box["y"] + box["height"] * (1.5 / 3))
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/prompts/{ids['What is 2+2?']}/\?a=train:0"))
    assert rendered(page, "history-chart") == 2
    assert page.get_attribute('[data-testid="history-chart"]', "data-traces") == (
        "training rollouts,evaluation rollouts"
    )
    assert page.inner_text('[data-testid="expected-answer"]') == "ans-What is 2+2?"
    assert page.inner_text('[data-testid="first-solved-train"]') == "1"
    assert page.inner_text('[data-testid="first-solved-eval"]') == "2"
    # left: step 0 (no correct completion: the first), right: the last training step's first correct one
    assert page.input_value('[data-testid="diff-step-a"]') == "train:0"
    assert page.input_value('[data-testid="diff-step-b"]') == "train:2"
    assert "wrong" in page.inner_text('[data-testid="diff-verdict-a"]')
    assert "correct" in page.inner_text('[data-testid="diff-verdict-b"]')
    assert page.locator('[data-testid="diff-text-a"] del.diff').count() >= 1
    assert page.locator('[data-testid="diff-text-b"] ins.diff').count() >= 1
    assert "% similar" in page.inner_text('[data-testid="diff-summary"]')
    # the right side: the evaluation step, then its second completion
    page.select_option('[data-testid="diff-step-b"]', "eval:2")
    page.wait_for_url(re.compile(r"b=eval%3A2|b=eval:2"))
    assert page.inner_text('[data-testid="diff-side-b"] .side-label').lower() == "eval step 2"
    page.locator('[data-testid="diff-members-b"] [data-testid="diff-member"]').nth(1).click()
    page.wait_for_url(re.compile(r"sb=\d+"))
    assert "at step 2" in page.inner_text('[data-testid="diff-text-b"]')
    assert page.locator('[data-testid="diff-members-b"] .member.current').inner_text() == "#1"
    page.screenshot(path="/tmp/orlab-prompts-prompt.png", full_page=True)

    # the distributions page: a truncation rate per step, histograms per step
    page.click('[data-testid="nav-distributions"]')
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/distributions/"))
    assert rendered(page, "truncation-chart") == 3
    assert rendered(page, "length-chart") == 3 and rendered(page, "reward-chart") == 3
    rates = page.evaluate(
        "() => Array.from(document.querySelector('[data-testid=truncation-chart]').data[0].y)"
    )
    assert rates == [0, 0, round(1 / 12, 6)]  # one truncated of the 12 rollouts of step 2
    assert "retention" in page.inner_text('[data-testid="retention-note"]')
    page.screenshot(path="/tmp/orlab-prompts-distributions.png", full_page=True)
    page.close()
    assert not errors, errors
