"""Issue 14's pages over training (points 5, 6 and 8): the prompt x step solve matrix with the counts
over time and its CSV, one prompt's history with a word diff of its completions at two steps, and the
per-step distributions. Every number comes from webapp.selectors.prompts, the same reading the API's
/api/runs/<id>/prompts/... and /distributions/ serve; definitions are in that module's docstring."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from webapp.runs import selectors as run_selectors
from webapp.selectors import prompts as sel
from webapp.ui.text_render import clean_text, render_markdown, word_diff


def _csv_response(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def run_prompts(request: HttpRequest, pk: int) -> HttpResponse:
    """The prompt x step solve matrix (``?phase=train|eval``; ``offset``/``limit`` zoom on a window of
    the ordered prompts); ``?format=csv``: the full matrix as CSV."""
    run = run_selectors.run_get(user=request.user, pk=pk)
    query = sel.MatrixQuery.parse(request.GET)
    if request.GET.get("format") == "csv":
        return _csv_response(sel.matrix_csv(run, query.phase), f"run-{run.pk}-{query.phase}-solve-matrix.csv")
    data = sel.matrix_view(run, query)
    data["prompt_url"] = reverse("run-prompt", args=[run.pk, 0])
    data["matrix_url"] = reverse("run-prompts", args=[run.pk])
    data["api_url"] = reverse("api-run-prompts", args=[run.pk])
    counts = data["counts"]
    latest = {k: (v[-1] if v else 0) for k, v in counts.items()}
    return render(
        request,
        "ui/prompts.html",
        {
            "run": run,
            "project": run.project,
            "query": query,
            "phases": sel.PHASES,
            "data": data,
            "latest": latest,
            "zoomed": query.offset > 0 or query.limit is not None,
            "csv_query": f"format=csv&phase={query.phase}",
        },
    )


def run_prompt(request: HttpRequest, pk: int, prompt_pk: int) -> HttpResponse:
    """One prompt over training: its solve rate per step (training and evaluation rollouts apart), its
    expected answer, and a word diff of two of its completions: ``a``/``b`` pick the steps (``40`` or
    ``eval:40``), ``sa``/``sb`` a completion at each (default: the first correct one, else the first)."""
    run = run_selectors.run_get(user=request.user, pk=pk)
    prompt = sel.prompt_get(run, prompt_pk)
    history = sel.prompt_history(run, prompt)
    stored = sel.prompt_sample_steps(run, prompt)
    choices = [f"{s['phase']}:{s['step']}" for s in stored]
    default_a = choices[0] if choices else None
    default_b = choices[-1] if choices else None
    train_choices = [c for c in choices if c.startswith("train:")]
    if len(train_choices) >= 2:
        default_a, default_b = train_choices[0], train_choices[-1]
    sides = []
    for key, sample_key, default in (("a", "sa", default_a), ("b", "sb", default_b)):
        chosen = sel.parse_step_choice(request.GET.get(key)) or sel.parse_step_choice(default)
        completions = sel.step_completions(run, prompt, *chosen) if chosen else []
        pick = sel.pick_completion(completions, request.GET.get(sample_key))
        sides.append(
            {
                "key": key,
                "sample_key": sample_key,
                "value": f"{chosen[0]}:{chosen[1]}" if chosen else "",
                "phase": chosen[0] if chosen else "",
                "step": chosen[1] if chosen else None,
                "completions": completions,
                "pick": pick,
            }
        )
    diff = None
    if sides[0]["pick"] is not None and sides[1]["pick"] is not None:
        # from left to right: words only on the right are insertions, words only on the left deletions
        right, left, diff = word_diff(
            clean_text(sides[1]["pick"].completion), clean_text(sides[0]["pick"].completion)
        )
        sides[0]["html"], sides[1]["html"] = render_markdown(left), render_markdown(right)
    chart = {
        "train": history["train"],
        "eval": history["eval"],
        "api_url": reverse("api-run-prompt", args=[run.pk, prompt.pk]),
    }
    return render(
        request,
        "ui/prompt.html",
        {
            "run": run,
            "project": run.project,
            "prompt": prompt,
            "prompt_html": render_markdown(clean_text(prompt.text)),
            "history": history,
            "chart": chart,
            "stored": stored,
            "sides": sides,
            "diff": diff,
            "other": {
                "a": sides[0]["value"],
                "b": sides[1]["value"],
                "sa": sides[0]["pick"].pk if sides[0]["pick"] else "",
                "sb": sides[1]["pick"].pk if sides[1]["pick"] else "",
            },
        },
    )


def run_distributions(request: HttpRequest, pk: int) -> HttpResponse:
    """Response-length and reward histograms per step, and the truncation rate per step."""
    run = run_selectors.run_get(user=request.user, pk=pk)
    query = sel.DistributionQuery.parse(request.GET)
    data = sel.distributions(run, query)
    data["api_url"] = reverse("api-run-distributions", args=[run.pk])
    return render(
        request,
        "ui/distributions.html",
        {"run": run, "project": run.project, "query": query, "phases": sel.PHASES, "data": data},
    )
