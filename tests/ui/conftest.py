"""Headless Chromium for the browser tests: Debian's chromium, driven by Playwright's Python API
(no browser download). .ci/run installs it; without it the browser tests fail rather than skip."""

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser(monkeypatch):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM reads are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def client_alice(client, alice):
    """Django's test client, logged in as alice (who owns the ``project`` fixture)."""
    client.force_login(alice)
    return client


@pytest.fixture
def client_bob(bob):
    """A second client, logged in as bob (a member of none of alice's projects)."""
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c
