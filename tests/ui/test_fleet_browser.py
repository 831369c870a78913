"""The launch page's fleet panel and model picker, as a user sees them in headless Chromium: a gpu
worker has reported two models, no cpu worker has. Screenshots: /tmp/orlab-launch-fleet.png (the
picker on the gpu queue), /tmp/orlab-launch-fleet-cpu.png (the cpu queue: nothing reported, a typed
name) and /tmp/orlab-run-unchecked.png (the run page of a run accepted unchecked)."""

from __future__ import annotations

import pytest

from tests.ui.test_browser import login
from tests.webapp.test_fleet_launch import report

ENTRIES = [
    {"name": "Qwen/Qwen2.5-0.5B-Instruct", "architecture": "Qwen2ForCausalLM", "parameters": 494_032_768,
     "chat_template": True},
    {"name": "base/no-template", "architecture": "LlamaForCausalLM", "parameters": 1_235_814_400,
     "chat_template": False},
]  # fmt: skip


@pytest.fixture
def gpu_worker(live_server, alice, project, settings):
    """Reported before the browser starts (no ORM call while Playwright runs); kept fresh for the
    whole test however slow the machine."""
    settings.ORLAB_WORKER_STALE_AFTER = 3600
    return report(name="g1@gpu-host", gpus=(80, 80), deepspeed="0.19.8", models=ENTRIES)


@pytest.mark.slow
def test_the_picker_follows_the_queue_and_the_run_page_tells_if_it_was_checked(
    live_server, project, gpu_worker, browser
):
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    login(page, live_server.url, f"/projects/{project.pk}/launch/?kind=sft&preset=tiny-cpu-demo")

    picker = '[data-testid="model-picker"]'
    typed = '[data-testid="model-name"]'
    assert page.is_visible(picker) and not page.is_visible(typed)
    options = page.eval_on_selector_all(f"{picker} option", "els => els.map(e => e.value)")
    assert options == ["tiny", "Qwen/Qwen2.5-0.5B-Instruct", "base/no-template"]
    assert page.input_value(picker) == "tiny"  # the preset's model
    gpu_block = '[data-testid="fleet-queue"][data-queue="gpu"]'
    cpu_block = '[data-testid="fleet-queue"][data-queue="cpu"]'
    assert "g1@gpu-host" in page.text_content(gpu_block) and "0.19.8" in page.text_content(gpu_block)
    assert "target" in page.get_attribute(gpu_block, "class")
    assert "No worker of queue cpu has reported: the run will wait in the queue" in page.text_content(
        cpu_block
    )
    page.select_option(picker, "Qwen/Qwen2.5-0.5B-Instruct")
    page.locator("#fleet-panel").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/orlab-launch-fleet.png", full_page=True)

    # the cpu queue: nobody reported, so the model is typed; back on gpu, the picker keeps the choice
    page.select_option("#f-queue", "cpu")
    assert page.is_visible(typed) and not page.is_visible(picker)
    assert page.input_value(typed) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "target" in page.get_attribute(cpu_block, "class")
    page.screenshot(path="/tmp/orlab-launch-fleet-cpu.png", full_page=True)
    page.select_option("#f-queue", "gpu")
    assert page.is_visible(picker) and page.input_value(picker) == "Qwen/Qwen2.5-0.5B-Instruct"

    # a model without a chat template under auto: refused next to the field, nothing launched
    page.select_option(picker, "base/no-template")
    page.fill('[data-field="config.chat_template"] input', "auto")  # the tiny preset reads raw prompts
    page.click('[data-testid="launch-submit"]')
    page.wait_for_selector('[data-testid="error-summary"]')
    assert "base/no-template has none" in page.text_content('[data-field="config.chat_template"] .error')

    # the picked model on the gpu queue is checked against the worker
    page.select_option(picker, "Qwen/Qwen2.5-0.5B-Instruct")
    page.click('[data-testid="launch-submit"]')
    page.wait_for_selector('[data-testid="launch-check"]')
    assert page.text_content('[data-testid="launch-check"]').strip() == "checked against g1@gpu-host"

    # a typed name on the cpu queue is accepted unchecked, and the run page says so
    page.goto(f"{live_server.url}/projects/{project.pk}/launch/?kind=sft&preset=tiny-cpu-demo")
    page.select_option("#f-queue", "cpu")
    page.fill(typed, "Org/some-model")
    page.click('[data-testid="launch-submit"]')
    page.wait_for_selector('[data-testid="launch-check"]')
    note = page.text_content('[data-testid="launch-check"]').strip()
    assert note == "not checked against any worker: none of queue cpu had reported"
    page.screenshot(path="/tmp/orlab-run-unchecked.png")
    assert not errors, errors
