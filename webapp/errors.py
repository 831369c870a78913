"""The one base of the services' errors (framework-free).

A ``ServiceError`` is a request a service or a selector cannot carry out, said in the API's shape: a
``message`` and ``field_errors`` mapping field paths (``config.lr``, ``steps[2].threshold``, ``row 12``)
to messages, with the HTTP ``status`` it means (400 unless a subclass says otherwise). The API answers
every one as ``{"detail": message, "errors": field_errors}`` (webapp.api.errors.exception_handler); the
pages show the message and the fields (a notice). Each service names its own subclass:

* ``webapp.runs.services.RunError``: runs, evaluations, the runs-table query;
* ``webapp.datasets.services.ImportRejected``: dataset imports and scoring jobs;
* ``webapp.datasets.curation.service.CurationError``: curation requests;
* ``webapp.runs.checkpoint_upload.UploadRefused``: checkpoint uploads (400 or 413);
* ``webapp.projects.services.ProjectNameTaken``: a project name the user already has.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str, field_errors: Mapping[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.field_errors = dict(field_errors or {})

    def text(self) -> str:
        """One line for a page's notice: the message and each field's messages."""
        details = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in self.field_errors.items())
        return f"{self.message} ({details})" if details else self.message
