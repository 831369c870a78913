"""Issue 14's rollout pages in headless Chromium: the samples list, filtered by a word search and a
group-status filter (state in the URL), one group's completions side by side, and a completion's
token view with its colouring toggled."""

from __future__ import annotations

import re

import pytest

from tests.ui.test_run_page_browser import login, new_page
from webapp.runs import services
from webapp.runs.samples import samples_record

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "Compute 6 * 7 and box the answer."


@pytest.fixture
def rl_run(alice, project):
    run = services.run_create(user=alice, project=project, name="rl", kind="external", config={})
    rows = []
    for step in range(3):
        for member in range(4):
            correct = member % 2 == 0 or step == 2  # step 2: solved 4/4 (zero variance)
            text = f"step {step}: {'six sevens' if correct else 'a guess'} \\boxed{{{42 if correct else 41}}}"
            rows.append(
                {
                    "step": step,
                    "prompt": PROMPT,
                    "expected_answer": "42",
                    "completion": text,
                    "reward": 1.0 if correct else 0.0,
                    "rewards": {"accuracy": 1.0 if correct else 0.0},
                    "advantage": 0.0 if step == 2 else (1.0 if correct else -1.0),
                    "verdict": "correct" if correct else "wrong",
                    "extracted_answer": "42" if correct else "41",
                    "length": len(text.split()),
                    "group_index": 0,
                    "member_index": member,
                    "finish_reason": "stop",
                    "tokens": {
                        "offsets": [0, 5, 8],
                        "logprobs": [-0.1, -1.5, -0.2],
                        "entropies": [0.1, 2.0, 0.3],
                        "engine_logprobs": [-0.1, -1.9, -0.2],
                    }
                    if member == 0
                    else None,
                }
            )
    rows = [{k: v for k, v in r.items() if v is not None} for r in rows]
    assert samples_record(run, rows) == 12
    return run


def test_list_filter_group_and_tokens(live_server, rl_run, browser):
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{rl_run.pk}/samples/")
    rows = page.locator('[data-testid="sample-row"]')
    assert rows.count() == 12
    assert (
        "expected" in rows.first.inner_text()
        and "42" in rows.first.locator('[data-testid="sample-expected"]').inner_text()
    )

    # filter: a phrase of the correct completions, in zero-variance groups only
    page.fill('[data-testid="sample-q"]', '"six sevens"')
    page.select_option('[data-testid="sample-group-status"]', "solved_all")
    page.click('[data-testid="sample-filter-submit"]')
    page.wait_for_url(re.compile(r"group_status=solved_all"))
    assert "q=%22six+sevens%22" in page.url
    assert rows.count() == 4
    assert {c.inner_text() for c in page.locator('[data-testid="sample-verdict-cell"]').all()} == {"correct"}

    # one group, side by side
    page.locator('[data-testid="group-link"]').first.click()
    page.wait_for_url(re.compile(r"/samples/group/2/0/"))
    assert page.locator('[data-testid="group-member"]').count() == 4
    assert page.get_attribute('[data-testid="group-status"]', "data-status") == "solved_all"
    assert "solved 4/4" in page.inner_text('[data-testid="group-reason"]')

    # the first member's tokens, coloured by entropy, then by log-prob
    page.locator('[data-testid="member-tokens-link"]').first.click()
    page.wait_for_url(re.compile(r"/tokens/"))
    assert page.get_attribute('[data-testid="token-text"]', "data-color") == "entropy"
    assert page.locator('[data-testid="token-text"] span.tok').count() == 3
    assert "2:" in page.locator('[data-testid="top-entropy-row"]').first.inner_text()  # "2: " has entropy 2.0
    assert "max |gap|" in page.inner_text('[data-testid="gap-summary"]')
    page.click('[data-testid="color-logprob"]')
    page.wait_for_url(re.compile(r"color=logprob"))
    assert page.get_attribute('[data-testid="token-text"]', "data-color") == "logprob"
    assert not errors, errors
