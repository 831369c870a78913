"""Issue 14's rollout pages of a run, read through webapp.selectors.samples (the API reads the same):

  /runs/<id>/samples/                         the samples list: filters, word and substring search,
                                              sorting, each row a preview of the completion and the
                                              expected answer; the state is the URL
  /runs/<id>/samples/group/<step>/<group>/    one group: the n completions of one prompt at one step
                                              side by side, and why the group was kept or filtered
  /runs/<id>/samples/<sample id>/tokens/      one completion coloured by per-token entropy, log-prob or
                                              the engine - trainer log-prob gap

Plain server-rendered pages (GET forms and links); no script needed."""

from __future__ import annotations

import math
from urllib.parse import urlencode

from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from webapp.runs import selectors
from webapp.runs.models import SAMPLE_VERDICTS, RolloutPrompt, Sample, SampleTokens
from webapp.selectors import samples as sq

# The first click on a column header sorts this way (largest first).
FIRST_CLICK = {"step": "-step", "reward": "-reward", "advantage": "-advantage", "length": "-length"}
COLORS = ("entropy", "logprob", "gap")
GROUP_STATUS_LABELS = {
    "kept": "kept",
    "zero_variance": "zero variance (any)",
    "solved_all": "solved n/n",
    "unsolved_all": "unsolved 0/n",
}
STATUS_BADGES = {
    "kept": "kept",
    "zero_variance": "zero variance",
    "solved_all": "solved n/n",
    "unsolved_all": "unsolved 0/n",
}


def _query(params: dict) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(clean) if clean else ""


def group_url(run_pk: int, sample) -> str:
    if sample.group_index is None:
        return ""
    url = reverse("run-sample-group", args=[run_pk, sample.step, sample.group_index])
    return url + ("?phase=eval" if sample.phase == "eval" else "")


def tokens_url(run_pk: int, sample) -> str:
    return reverse("run-sample-tokens", args=[run_pk, sample.pk])


def _data_sources(run, current: str) -> list[str]:
    names = list(
        RolloutPrompt.objects.filter(run=run)
        .exclude(data_source="")
        .order_by("data_source")
        .values_list("data_source", flat=True)
        .distinct()[:200]
    )
    if current and current not in names:
        names.append(current)
    return names


# --- the list -----------------------------------------------------------------------------------------


def run_samples(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    state = sq.SampleQuery(request.GET, run)
    page = state.paginator(state.queryset().only("id"), state.page_size).get_page(request.GET.get("page"))
    params = state.params
    rows = [
        {
            "s": s,
            "preview": sq.row_preview(s),
            "expected": sq.expected_answer(s),
            "prompt_excerpt": s.ref_excerpt or s.prompt_excerpt or "",
            "group_url": group_url(run.pk, s),
            "tokens_url": tokens_url(run.pk, s) if s.has_tokens else "",
            "components": s.rewards if isinstance(s.rewards, dict) else {},
        }
        for s in sq.list_rows([s.pk for s in page.object_list])
    ]
    columns = []
    for label, key in (
        ("Step", "step"),
        ("Reward", "reward"),
        ("Advantage", "advantage"),
        ("Length", "length"),
    ):
        current = state.key == key
        next_order = (key if state.desc else f"-{key}") if current else FIRST_CLICK[key]
        columns.append(
            {
                "label": label,
                "key": key,
                "url": _query({**params, "ordering": next_order if next_order != "step" else ""}) or "?",
                "arrow": ("▼" if state.desc else "▲") if current else "",
            }
        )
    context = {
        "run": run,
        "project": run.project,
        "state": state,
        "page": page,
        "rows": rows,
        "columns": {c["key"]: c for c in columns},
        "verdicts": SAMPLE_VERDICTS,
        "phases": sq.PHASES,
        "finish_reasons": sq.FINISH_REASONS,
        "group_statuses": list(GROUP_STATUS_LABELS.items()),
        "data_sources": _data_sources(run, state.data_source),
        "page_sizes": sq.PAGE_SIZES,
        "verdict_value": ",".join(state.verdicts),
        "ordering_hidden": params["ordering"],
        "prev_url": _query({**params, "page": page.previous_page_number()}) if page.has_previous() else "",
        "next_url": _query({**params, "page": page.next_page_number()}) if page.has_next() else "",
        "full_text": connection.vendor == "postgresql",
        "errors": state.errors,
        "nav": "samples",
    }
    return render(request, "ui/samples.html", context)


# --- one group ----------------------------------------------------------------------------------------


def _same_answer(extracted: str, expected: str) -> bool | None:
    if not extracted or not expected:
        return None
    return extracted.strip() == expected.strip()


def run_sample_group(request: HttpRequest, pk: int, step: int, group: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    phase = request.GET.get("phase", "")
    found = sq.group_get(run, step, group, phase if phase in sq.PHASES else "")
    if found is None:
        raise Http404("no such group")
    expected = found.expected_answer
    around = sq.neighbour_groups(run, step, group, found.phase)
    suffix = "?phase=eval" if found.phase == "eval" else ""
    stats = found.reward_stats
    components = found.components
    members = [
        {
            "s": m,
            "components": [(name, (m.rewards or {}).get(name)) for name in components],
            "match": _same_answer(m.extracted_answer, expected),
            "tokens_url": tokens_url(run.pk, m) if m.has_tokens else "",
        }
        for m in found.members
    ]
    context = {
        "run": run,
        "project": run.project,
        "group": found,
        "members": members,
        "expected": expected,
        "stats": stats,
        "status_label": STATUS_BADGES[found.status],
        "components": components,
        "prev_url": reverse("run-sample-group", args=[run.pk, step, around["prev"]]) + suffix
        if around["prev"] is not None
        else "",
        "next_url": reverse("run-sample-group", args=[run.pk, step, around["next"]]) + suffix
        if around["next"] is not None
        else "",
        "phase_urls": [
            (
                p,
                reverse("run-sample-group", args=[run.pk, step, group])
                + ("?phase=eval" if p == "eval" else ""),
            )
            for p in found.phases
        ],
        "list_url": reverse("run-samples", args=[run.pk])
        + _query({"step": step, "phase": found.phase if found.phase != "train" else ""}),
        "prompt_url": reverse("run-prompt", args=[run.pk, found.prompt.pk]) if found.prompt else "",
        "nav": "samples",
    }
    return render(request, "ui/sample_group.html", context)


# --- one sample's tokens ------------------------------------------------------------------------------


def _shade(value: float | None, scale: float) -> str:
    """A background alpha from 0 (none) to 0.85."""
    if value is None or scale <= 0:
        return ""
    a = max(0.0, min(1.0, value / scale)) * 0.85
    return f"{a:.2f}"


def _token_rows(view: sq.TokenView, color: str) -> tuple[list[dict], float]:
    """Each token with its shade in the chosen colouring (entropy: high is dark; log-prob: a low
    probability is dark; gap: a large |engine - trainer| is dark), and the scale used."""
    if color == "entropy":
        values = [t["entropy"] for t in view.tokens]
    elif color == "logprob":
        values = [
            None if t["logprob"] is None else 1.0 - math.exp(min(0.0, t["logprob"])) for t in view.tokens
        ]
    else:
        values = [None if t["gap"] is None else abs(t["gap"]) for t in view.tokens]
    present = [v for v in values if v is not None]
    scale = 1.0 if color == "logprob" else (max(present) if present else 0.0)
    rows = []
    for t, v in zip(view.tokens, values, strict=True):
        title = []
        if t["entropy"] is not None:
            title.append(f"entropy {t['entropy']:.3f}")
        if t["logprob"] is not None:
            title.append(f"log-prob {t['logprob']:.3f} (p {math.exp(min(0.0, t['logprob'])):.3f})")
        if t["gap"] is not None:
            title.append(f"engine - trainer {t['gap']:+.3f}")
        rows.append({**t, "alpha": _shade(v, scale), "title": " · ".join(title) or "no values"})
    return rows, scale


def run_sample_tokens(request: HttpRequest, pk: int, sample_pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    sample = get_object_or_404(Sample.objects.select_related("prompt_ref"), run=run, pk=sample_pk)
    stored = SampleTokens.objects.filter(sample=sample).first()
    view = sq.token_view(sample, stored) if stored else None
    choices = []
    if view:
        choices = [
            c
            for c, ok in zip(COLORS, (view.has_entropies, view.has_logprobs, view.has_engine), strict=True)
            if ok
        ]
    color = request.GET.get("color", "")
    if color not in choices:
        color = choices[0] if choices else ""
    tokens, scale = _token_rows(view, color) if view and color else ([], 0.0)
    base = reverse("run-sample-tokens", args=[run.pk, sample.pk])
    context = {
        "run": run,
        "project": run.project,
        "sample": sample,
        "view": view,
        "tokens": tokens,
        "color": color,
        "scale": scale,
        "color_urls": [(c, f"{base}?color={c}") for c in choices],
        "top_entropy": view.top_entropy() if view else [],
        "gap": view.gap_summary() if view else None,
        "top_gap": view.top_gap() if view else [],
        "group_url": group_url(run.pk, sample),
        "expected": sq.expected_answer(sample),
        "list_url": reverse("run-samples", args=[run.pk]) + _query({"step": sample.step}),
        "nav": "samples",
    }
    return render(request, "ui/sample_tokens.html", context)
