"""The checkpoints table's download links (issue 16 point 8): ``/checkpoints/<id>/download/`` streams
the checkpoint as a tar (``?archive=tar.gz`` compressed), model files only unless
``?include=optimizer`` (webapp/runs/checkpoint_download.py has the file rule and the trust rule).
Members of the run's project only: anyone else gets the 404 of a checkpoint that does not exist."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.http import require_GET

from webapp.projects.selectors import project_list
from webapp.runs.checkpoint_download import (
    DownloadOptionsInvalid,
    DownloadRefused,
    download_response,
    parse_options,
)
from webapp.runs.models import Checkpoint


@require_GET
def checkpoint_download(request: HttpRequest, pk: int) -> HttpResponse:
    checkpoint = Checkpoint.objects.filter(pk=pk, run__project__in=project_list(user=request.user)).first()
    if checkpoint is None:
        raise Http404("no such checkpoint")
    try:
        include, archive = parse_options(request.GET)
        return download_response(checkpoint, include, archive)
    except DownloadOptionsInvalid as exc:
        return HttpResponseBadRequest(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items()), content_type="text/plain"
        )
    except DownloadRefused as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")
