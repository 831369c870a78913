"""Issues 16.8 and 16.9 in headless Chromium, on a run a real worker trains: a soft_pi run launched
through the API without a step size learns; while the page is open the finished run's checkpoint row
gains its download links (run.js redraws the table; u3-checkpoint-downloads.js fills the column); the
model download is a tar of the checkpoint's model files; after a reload the page shows the theory-rate
checks (locally quadratic: order about 2, agrees)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import wait_for
from webapp.runs.models import Checkpoint, Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SOFT_PI = {"method": "soft_pi", "tau": 0.1, "iterations": 12,
           "mdp": {"kind": "garnet", "states": 10, "actions": 3, "branching": 3, "seed": 0, "gamma": 0.9}}  # fmt: skip


def test_soft_pi_run_downloads_and_rates(live_server, start_worker, browser, alice, project):
    import requests

    from tests.ui.test_run_page_browser import login, new_page, token_for

    headers = {"Authorization": f"Token {token_for(alice)}", "Connection": "close"}
    created = requests.post(
        f"{live_server.url}/api/runs/",
        json={"project": project.pk, "name": "spi", "kind": "tabular", "config": SOFT_PI},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{run_id}/")
    assert page.locator('[data-testid="queue-note"]').is_visible()  # queued, no worker yet
    assert not page.locator('[data-testid="rates-section"]').count()

    start_worker(queues="short")
    wait_for(lambda: Run.objects.get(pk=run_id).status == "succeeded", 90, message="the run to succeed")
    # the page follows: the row of the final checkpoint appears with its download links
    link = page.locator('[data-testid="checkpoint-row"] [data-testid="download-model"]')
    wait_for(lambda: link.count() == 1, 20, message="the download link")
    assert not page.locator('[data-testid="queue-note"]').is_visible()
    # in its column (after the size), in the row run.js drew
    heads = page.locator('[data-testid="checkpoints-table"] thead th').all_text_contents()
    cells = page.locator('[data-testid="checkpoint-row"] td')
    assert cells.nth(heads.index("download")).get_attribute("data-testid") == "checkpoint-download"
    checkpoint = Checkpoint.objects.get(run_id=run_id)
    directory = Path(checkpoint.path)
    size = page.inner_text('[data-testid="download-model-size"]')
    assert size.replace("\u00a0", " ").endswith(("bytes", "KB"))
    full = page.locator('[data-testid="checkpoint-row"] [data-testid="download-optimizer"]')
    assert full.inner_text() == "with optimizer state"  # state.json is trainer bookkeeping

    with page.expect_download() as caught:
        link.click()
    with tarfile.open(caught.value.path(), "r:") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    root = f"run-{run_id}-checkpoint-{checkpoint.step}"
    assert got == {f"{root}/params.safetensors": (directory / "params.safetensors").read_bytes()}

    # the same archive from the API with the token
    body = requests.get(
        f"{live_server.url}/api/checkpoints/{checkpoint.pk}/download/", headers=headers
    ).content
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        assert tar.getnames() == [f"{root}/params.safetensors"]

    page.reload()
    rates = page.locator('[data-testid="rates-section"]')
    assert rates.is_visible()
    assert page.text_content('[data-testid="rates-verdict"]') == "agrees"
    order = float(page.locator('[data-testid="rate-order"] td.num').inner_text())
    assert 1.6 <= order <= 2.4, order
    assert not errors, errors
