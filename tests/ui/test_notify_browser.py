"""In headless Chromium: the project notifications page creates a webhook channel from its form (a
bad URL first: the field's error is shown), shows the generated secret once, sends a test, and the
delivery appears and turns `sent` once a real worker on the `control` queue posted it to a local
receiver, whose HMAC check passes with the secret the page showed."""

from __future__ import annotations

import re

import pytest

from tests.webapp.notify_receivers import WebhookReceiver, signature_ok

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def hook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_notifications_page(
    live_server, fast_passwords, alice, project, browser, start_worker, hook, settings
):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True  # the live server runs in this process
    start_worker("notify-ui", queues="control", concurrency=1, pool="solo", ORLAB_WEBHOOK_ALLOW_PRIVATE="1")
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}/login/?next=/projects/{project.pk}/notifications/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/projects/{project.pk}/notifications/$"))
    page.wait_for_selector('[data-testid="notify-no-channels"]:not([hidden])')

    page.fill("#notify-name", "ops hook")
    page.fill("#notify-url", "ftp://example.org/")
    page.click('[data-testid="notify-create"]')
    page.wait_for_selector('[data-testid="notify-errors"] li[data-field="url"]')

    page.fill("#notify-url", hook.url)
    page.click('[data-testid="notify-create"]')
    row = page.locator('[data-testid="notify-channel"]')
    row.wait_for()
    assert "ops hook" in row.text_content() and hook.url in row.text_content()
    secret = page.locator("#notify-secret-value").text_content()
    assert len(secret) >= 32 and secret not in row.text_content()  # the list shows a hint only

    row.locator('[data-testid="notify-test"]').click()
    page.wait_for_selector('[data-testid="notify-delivery"][data-status="sent"]', timeout=60_000)
    delivery = page.locator('[data-testid="notify-delivery"]')
    assert delivery.count() == 1 and "ops hook" in delivery.text_content()
    page.screenshot(path="/tmp/orlab-notify-page.png", full_page=True)
    [(headers, body)] = hook.posts
    assert signature_ok(secret, headers, body) and headers["x-orlab-event"] == "test"

    # disable, then delete (confirm dialog accepted)
    row.locator('[data-testid="notify-toggle"]').click()
    page.wait_for_selector('[data-testid="notify-channel"].disabled')
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator('[data-testid="notify-channel"] [data-testid="notify-delete"]').click()
    page.wait_for_selector('[data-testid="notify-no-channels"]:not([hidden])')
    assert errors == []
