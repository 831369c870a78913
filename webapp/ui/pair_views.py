"""The preference-pair browser (webapp.selectors.pairs.PairQuery, shared with the pairs API) and one pair:
rendered, side by side, with a word-level diff (webapp.ui.text_render)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from webapp.datasets import selectors as dataset_selectors
from webapp.datasets.models import Dataset, PairScore, PreferencePair
from webapp.runs import selectors as run_selectors
from webapp.selectors.pairs import PAIR_PAGE_SIZES, PairQuery
from webapp.ui.helpers import EXCERPT_CHARS, _dataset
from webapp.ui.text_render import clean_text, render_markdown, word_diff

# The pair list's filters and ordering: webapp.selectors.pairs.PairQuery (shared with the pairs API).
# The first click on a column header sorts this way (longest first, lowest margin first).
FIRST_CLICK = {"row": "row", "chosen_len": "-chosen_len", "rejected_len": "-rejected_len", "margin": "margin"}

# --- links --------------------------------------------------------------------------------------------


def _query(params: dict) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(clean) if clean else ""


# --- the pair browser ----------------------------------------------------------------------------------


def pair_browser(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, kind=Dataset.Kind.PREFERENCE)
    state = PairQuery(request.GET, dataset, user=request.user)
    qs = (
        state.queryset()
        .only("id", "row", "source", "chosen_len", "rejected_len", "kept", "drop_reason")
        .annotate(excerpt=Substr("prompt", 1, EXCERPT_CHARS))
    )
    page = state.paginator(qs, state.page_size).get_page(request.GET.get("page"))
    params = state.params
    pair_query = _query(params)
    rows = [
        {
            "pair": pair,
            "url": reverse("dataset-pair", args=[dataset.pk, pair.row]) + pair_query,
            "margin": getattr(pair, "margin", None),
        }
        for pair in page.object_list
    ]
    columns = []
    for label, key, num in (
        ("Row", "row", True),
        ("Source", None, False),
        ("Prompt", None, False),
        ("Chosen len", "chosen_len", True),
        ("Rejected len", "rejected_len", True),
        ("Curation", None, False),
        ("Margin", "margin", True),
    ):
        if key == "margin" and state.rm is None:
            continue
        if key is None:
            columns.append({"label": label, "num": num})
            continue
        current = state.key == key
        next_order = (key if state.desc else f"-{key}") if current else FIRST_CLICK[key]
        columns.append(
            {
                "label": label,
                "key": key,
                "num": num,
                "url": _query({**params, "ordering": next_order if next_order != "row" else ""}) or "?",
                "arrow": ("▼" if state.desc else "▲") if current else "",
            }
        )
    context = {
        "dataset": dataset,
        "project": dataset.project,
        "state": state,
        "page": page,
        "rows": rows,
        "columns": columns,
        "page_sizes": PAIR_PAGE_SIZES,
        "sources": dataset_selectors.pair_distinct(dataset, "source", limit=500),
        "drop_reasons": dataset_selectors.pair_distinct(dataset, "drop_reason", limit=200, dropped_only=True),
        "prev_url": _query({**params, "page": page.previous_page_number()}) if page.has_previous() else "",
        "next_url": _query({**params, "page": page.next_page_number()}) if page.has_next() else "",
        "ordering_hidden": params["ordering"],
        "page_data": {"dataset": dataset.id},
    }
    return render(request, "ui/pairs.html", context)


# --- one pair ------------------------------------------------------------------------------------------


def _turns(conversation) -> list[dict]:
    return [
        {"role": str(m.get("role", "")), "html": render_markdown(clean_text(m.get("content", "")))}
        for m in conversation
        if isinstance(m, dict)
    ]


def pair_detail(request: HttpRequest, pk: int, row: int) -> HttpResponse:
    dataset = _dataset(request, pk, kind=Dataset.Kind.PREFERENCE)
    pair = get_object_or_404(PreferencePair, dataset=dataset, row=row)
    state = PairQuery(request.GET, dataset, user=request.user, list_reward_models=False)
    around = state.neighbours(pair)
    params = state.params
    query = _query(params)
    list_page = (around["position"] - 1) // state.page_size + 1 if around["in_list"] else None
    list_url = (
        reverse("dataset-pairs", args=[dataset.pk])
        + (_query({**params, "page": list_page if list_page and list_page > 1 else ""}))
        + f"#row-{pair.row}"
    )
    pair_url = lambda r: reverse("dataset-pair", args=[dataset.pk, r]) + query  # noqa: E731

    # the conversation before the final responses: shown once (the import checks both sides share it)
    context_turns = []
    for side in (pair.chosen, pair.rejected):
        if isinstance(side, list) and len(side) > 1:
            context_turns = _turns(side[:-1])
            break
    derived_prompt = ""
    if context_turns:
        source = pair.chosen if isinstance(pair.chosen, list) else pair.rejected
        derived_prompt = "\n\n".join(
            str(m.get("content", "")) for m in source[:-1] if m.get("role") in ("user", "system")
        )
    show_prompt = not context_turns or pair.prompt.strip() != derived_prompt.strip()

    chosen_text, rejected_text = clean_text(pair.chosen_text), clean_text(pair.rejected_text)
    marked_chosen, marked_rejected, diff = word_diff(chosen_text, rejected_text)

    scores = list(
        PairScore.objects.filter(pair=pair)
        .select_related("checkpoint__run")
        .order_by("checkpoint__run__name", "checkpoint__run_id", "-checkpoint__step")
    )
    visible_runs = set(
        run_selectors.run_list(user=request.user)
        .filter(pk__in={s.checkpoint.run_id for s in scores})
        .values_list("pk", flat=True)
    )
    final_role = lambda side: side[-1].get("role", "assistant") if isinstance(side, list) and side else ""  # noqa: E731
    context = {
        "dataset": dataset,
        "project": dataset.project,
        "pair": pair,
        "state": state,
        "around": around,
        "list_url": list_url,
        "prev_url": pair_url(around["prev"]) if around["prev"] is not None else "",
        "next_url": pair_url(around["next"]) if around["next"] is not None else "",
        "prompt_html": render_markdown(clean_text(pair.prompt)) if show_prompt else "",
        "context_turns": context_turns,
        "chosen_html": render_markdown(marked_chosen),
        "rejected_html": render_markdown(marked_rejected),
        "chosen_role": final_role(pair.chosen),
        "rejected_role": final_role(pair.rejected),
        "diff": diff,
        "scores": [{"score": s, "visible": s.checkpoint.run_id in visible_runs} for s in scores],
        "metadata_json": json.dumps(pair.metadata, indent=2, ensure_ascii=False) if pair.metadata else "",
        "page_data": {
            "list_url": list_url,
            "prev_url": pair_url(around["prev"]) if around["prev"] is not None else "",
            "next_url": pair_url(around["next"]) if around["next"] is not None else "",
        },
    }
    return render(request, "ui/pair.html", context)
