"""Schema-driven fuzzing: schemathesis generates requests for every operation of /api/schema/ (valid
and invalid bodies and query strings) and the API must never answer with a 5xx."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error


def _load_schema():
    # Built in-process from the views (the same document /api/schema/ serves to logged-in users);
    # pytest-django has configured Django before this module is collected.
    from django.core.wsgi import get_wsgi_application
    from drf_spectacular.generators import SchemaGenerator

    loaded = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    loaded.app = get_wsgi_application()
    return loaded


schema = _load_schema()


@pytest.fixture
def keep_db_connection():
    """The raw WSGI app closes the DB connection after each request (close_old_connections); inside
    a test's transaction it must not, exactly as Django's own test client arranges."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(alice, project, keep_db_connection):
    from rest_framework.authtoken.models import Token

    from webapp.runs.models import Run

    # Give the fuzzer something real to hit: the ids 1..3 exist for the common id range.
    for _ in range(3):
        Run.objects.create(project=project, name="fuzz", kind="external", status="running", created_by=alice)
    return Token.objects.create(user=alice).key


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_no_operation_answers_with_a_server_error(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error])
