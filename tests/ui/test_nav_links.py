"""The main navigation reaches the project's pages added by issues 15 and 16 (alerts, notifications,
queues), and every link it offers answers."""

import re

import pytest

pytestmark = pytest.mark.django_db


def nav_links(html: str) -> dict[str, str]:
    nav = html[html.index('<nav class="mainnav">') : html.index("</nav>")]
    return {testid: href for href, testid in re.findall(r'href="([^"]+)" data-testid="(nav-[a-z-]+)"', nav)}


def test_a_project_page_links_its_alerts_notifications_and_queues(client_alice, project):
    links = nav_links(client_alice.get(f"/projects/{project.pk}/").content.decode())
    assert links["nav-alerts"] == f"/projects/{project.pk}/alerts/"
    assert links["nav-notifications"] == f"/projects/{project.pk}/notifications/"
    assert links["nav-queues"] == f"/projects/{project.pk}/queues/"
    for href in links.values():
        assert client_alice.get(href).status_code == 200, href


def test_outside_a_project_the_queues_of_all_projects(client_alice, project):
    links = nav_links(client_alice.get("/").content.decode())
    assert links["nav-queues"] == "/queues/"
    assert "nav-alerts" not in links
    assert client_alice.get("/queues/").status_code == 200
