"""The browsable API reference (/api-docs/): Swagger UI from drf-spectacular-sidecar's assets served
by orlab itself (no CDN), behind the login, linked from the navigation; in headless Chromium it
renders the API's operations from /api/schema/ without a request leaving the server."""

from __future__ import annotations

import re

import pytest

from tests.ui.test_browser import login

BUNDLE = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"


@pytest.mark.django_db
def test_the_reference_needs_a_login_and_its_assets_are_local(client, client_alice):
    from django.test import Client

    anonymous = Client()
    r = anonymous.get("/api-docs/")
    assert r.status_code == 302 and r["Location"].startswith("/login/?next=/api-docs/")

    r = client_alice.get("/api-docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert BUNDLE in html and "/api/schema/" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "an asset from another host"
    assert client_alice.get(BUNDLE).status_code == 200
    assert 'data-testid="nav-api-docs"' in client_alice.get("/").content.decode()


@pytest.mark.slow
def test_swagger_ui_renders_the_operations(live_server, alice, browser):
    requests: list[str] = []
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    login(page, live_server.url, "/api-docs/")  # the logged-out visit went through the login page

    page.wait_for_selector(".opblock")
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert "/api/runs/" in paths and "/api/runs/{id}/metrics/" in paths and "/api/projects/resolve/" in paths
    assert len(paths) > 30
    assert "orlab API" in page.text_content(".info .title")
    # open one operation: its parameters render from the schema
    page.click('.opblock-summary-path[data-path="/api/projects/resolve/"]')
    page.wait_for_selector(".opblock.is-open .parameters")
    assert "name" in page.text_content(".opblock.is-open .parameters")
    page.screenshot(path="/tmp/orlab-api-docs.png")
    foreign = [u for u in requests if not u.startswith(live_server.url) and not u.startswith("data:")]
    assert foreign == [] and errors == []
