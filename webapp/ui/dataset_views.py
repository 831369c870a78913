"""The dataset pages: a project's datasets (list and upload), one dataset version (facts, import
progress, curation summary, problems), the preference-pair browser, one pair (rendered, side by side,
with a word-level diff), and the curation form.

Like the other pages: read through selectors scoped to the user's projects (anything else is a 404),
write through the services, and leave the live parts (import progress, charts) to the page's JS."""

from __future__ import annotations

import json
import re
from difflib import SequenceMatcher
from itertools import groupby
from pathlib import Path
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.db.models.functions import Substr
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods

from webapp.datasets import selectors as dataset_selectors
from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset, PairScore, PreferencePair, Problem
from webapp.projects.selectors import project_list
from webapp.runs import selectors as run_selectors
from webapp.selectors.pairs import PAIR_PAGE_SIZES, PairQuery, reward_models

PROBLEM_PAGE_SIZE = 50
EXCERPT_CHARS = 240
# The pair list's filters and ordering: webapp.selectors.pairs.PairQuery (shared with the pairs API).
# The first click on a column header sorts this way (longest first, lowest margin first).
FIRST_CLICK = {"row": "row", "chosen_len": "-chosen_len", "rejected_len": "-rejected_len", "margin": "margin"}


# --- access -----------------------------------------------------------------------------------------


def _project(request: HttpRequest, pk: int):
    return get_object_or_404(project_list(user=request.user), pk=pk)


def _datasets(user):
    return Dataset.objects.filter(project__in=project_list(user=user))


def _dataset(request: HttpRequest, pk: int, *, kind: str | None = None) -> Dataset:
    dataset = get_object_or_404(
        _datasets(request.user).select_related("project", "parent", "created_by", "source_run"), pk=pk
    )
    if kind is not None and dataset.kind != kind:
        raise Http404(f"dataset {dataset.pk} holds {dataset.kind}, not {kind}")
    return dataset


def _query(params: dict) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(clean) if clean else ""


# --- text rendering: markdown-ish, escaped, with diff marks --------------------------------------------

# The diff marks travel through the renderer as private-use characters (removed from user text first)
# and become <ins>/<del> at the very end, split around every tag so they always nest.
INS_OPEN, INS_CLOSE, DEL_OPEN, DEL_CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_SENTINELS = re.compile("[\ue000-\ue003]")
_MARK_OPEN = {INS_OPEN: '<ins class="diff">', DEL_OPEN: '<del class="diff">'}
_MARK_CLOSE = {INS_OPEN: "</ins>", DEL_OPEN: "</del>"}
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+#.-]*)")
_HEADING = re.compile(r"^([\ue000-\ue003]*)#{1,6}\s+")
_INLINE_CODE = re.compile(r"(`[^`\n]+`)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.S)
_TAG_OR_MARK = re.compile(r"(<[^>]*>|[\ue000-\ue003])")
_EMPTY_MARK = re.compile(r'<(ins|del) class="diff"></\1>')
# Words, single punctuation characters and runs of whitespace: what the diff compares.
_DIFF_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
MAX_DIFF_TOKENS = 40_000  # words, both sides together; longer responses are shown without a diff


def clean_text(text) -> str:
    return _SENTINELS.sub("\ufffd", str(text if text is not None else ""))


def _plain(line: str) -> str:
    return _SENTINELS.sub("", line)


def _inline(text: str) -> str:
    """Escape, then `code` and **bold** (never inside code)."""
    out = []
    for part in _INLINE_CODE.split(escape(text)):
        if len(part) > 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{part[1:-1]}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", part))
    return "".join(out)


def _place_marks(html: str) -> str:
    out: list[str] = []
    open_mark = None
    for part in _TAG_OR_MARK.split(html):
        if not part:
            continue
        if part in _MARK_OPEN:
            if open_mark:
                out.append(_MARK_CLOSE[open_mark])
            open_mark = part
            out.append(_MARK_OPEN[part])
        elif part in (INS_CLOSE, DEL_CLOSE):
            if open_mark:
                out.append(_MARK_CLOSE[open_mark])
                open_mark = None
        elif part.startswith("<") and open_mark:
            out.append(_MARK_CLOSE[open_mark] + part + _MARK_OPEN[open_mark])
        else:
            out.append(part)
    if open_mark:
        out.append(_MARK_CLOSE[open_mark])
    return _EMPTY_MARK.sub("", "".join(out))


def render_markdown(text: str) -> SafeString:
    """Paragraphs (blank-line separated; single newlines kept), # headings, **bold**, inline `code`
    and fenced ``` code blocks. Everything is HTML-escaped before any tag is added."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(f"<p>{_inline(chr(10).join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(_plain(line))
        if fence:
            flush()
            marker, lang = fence.group(1), fence.group(2)
            code: list[str] = []
            i += 1
            while i < len(lines) and not _plain(lines[i]).strip().startswith(marker):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end)
            cls = f' class="language-{escape(lang)}"' if lang else ""
            blocks.append(f"<pre><code{cls}>{escape(chr(10).join(code))}</code></pre>")
            continue
        if not _plain(line).strip():
            flush()
        elif heading := _HEADING.match(line):
            flush()
            blocks.append(f'<p class="md-heading">{_inline(heading.group(1) + line[heading.end() :])}</p>')
        else:
            para.append(line)
        i += 1
    flush()
    return mark_safe(_place_marks("".join(blocks)))  # noqa: S308 (built from escaped text only)


def _wrap_changes(tokens: list[str], changed: list[bool], open_mark: str, close_mark: str) -> str:
    """Join tokens, wrapping runs of changed words (with the spaces between them, never a newline)."""
    out: list[str] = []
    in_run = False
    n = len(tokens)
    for i, token in enumerate(tokens):
        if token.isspace():
            if in_run:
                nxt = i + 1
                if "\n" in token or nxt >= n or not changed[nxt] or tokens[nxt].isspace():
                    out.append(close_mark)
                    in_run = False
            out.append(token)
        elif changed[i]:
            if not in_run:
                out.append(open_mark)
                in_run = True
            out.append(token)
        else:
            if in_run:
                out.append(close_mark)
                in_run = False
            out.append(token)
    if in_run:
        out.append(close_mark)
    return "".join(out)


def word_diff(chosen: str, rejected: str) -> tuple[str, str, dict | None]:
    """The two texts with the words only one of them has marked (chosen: inserted, rejected:
    deleted), and a summary; texts too long to diff come back unmarked with no summary.

    Words and punctuation are compared, whitespace is not; difflib's popular-token heuristic
    (autojunk) keeps long responses fast (20,000 words a side in well under a second)."""
    a, b = _DIFF_TOKEN.findall(chosen), _DIFF_TOKEN.findall(rejected)
    wa = [i for i, t in enumerate(a) if not t.isspace()]
    wb = [j for j, t in enumerate(b) if not t.isspace()]
    if len(wa) + len(wb) > MAX_DIFF_TOKENS:
        return chosen, rejected, None
    matcher = SequenceMatcher(None, [a[i] for i in wa], [b[j] for j in wb])
    changed_a, changed_b = [False] * len(a), [False] * len(b)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            for i in wa[i1:i2]:
                changed_a[i] = True
            for j in wb[j1:j2]:
                changed_b[j] = True
    summary = {
        "similarity": round(matcher.ratio() * 100),
        "chosen_only": sum(changed_a),
        "rejected_only": sum(changed_b),
    }
    return (
        _wrap_changes(a, changed_a, INS_OPEN, INS_CLOSE),
        _wrap_changes(b, changed_b, DEL_OPEN, DEL_CLOSE),
        summary,
    )


# --- datasets list and upload -------------------------------------------------------------------------


class DatasetUploadForm(forms.Form):
    file = forms.FileField(help_text="JSONL, JSON (one array), CSV or Parquet")
    name = forms.CharField(max_length=200, required=False, help_text="defaults to the file's name")
    kind = forms.ChoiceField(choices=Dataset.Kind.choices, initial=Dataset.Kind.PREFERENCE)

    def clean(self):
        data = super().clean()
        if not data.get("name") and data.get("file"):
            data["name"] = Path(data["file"].name).stem[:200] or "dataset"
        return data


def _import_error_lines(errors: dict[str, list[str]]) -> list[str]:
    return [f"{key}: {msg}" for key, msgs in errors.items() for msg in msgs]


@require_http_methods(["GET", "POST"])
def dataset_list(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    import_detail, import_errors = "", []
    if request.method == "POST":
        form = DatasetUploadForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                dataset, background = dataset_services.dataset_upload(
                    user=request.user,
                    project=project,
                    name=data["name"],
                    kind=data["kind"],
                    upload=data["file"],
                )
            except dataset_services.ImportRejected as exc:
                import_detail, import_errors = exc.detail, _import_error_lines(exc.errors)
            else:
                if background:
                    messages.info(request, f"Importing {dataset} in the background.")
                else:
                    messages.success(request, f"Imported {dataset}: {dataset.row_count} rows.")
                return redirect("dataset", pk=dataset.pk)
    else:
        form = DatasetUploadForm()

    datasets = list(
        Dataset.objects.filter(project=project)
        .select_related("parent", "created_by")
        .order_by("name", "-version")
    )
    groups = [
        {"name": name, "versions": list(versions)} for name, versions in groupby(datasets, lambda d: d.name)
    ]
    # newest activity first
    groups.sort(key=lambda g: max(d.created_at for d in g["versions"]), reverse=True)
    page_data = {
        "importing": [d.id for d in datasets if d.status == Dataset.Status.IMPORTING],
        "dataset_api": reverse("api-dataset", args=[0]),
    }
    context = {
        "project": project,
        "groups": groups,
        "count": len(datasets),
        "form": form,
        "names": sorted({d.name for d in datasets}),
        "import_detail": import_detail,
        "import_errors": import_errors,
        "page_data": page_data,
    }
    return render(request, "ui/datasets.html", context)


# --- one dataset ---------------------------------------------------------------------------------------


def curation_summary(meta: dict) -> tuple[list[dict], dict]:
    """(steps, totals) of meta.curation_stats: ``{"rows", "in", "kept", "dropped", "kept_by_source",
    "seconds", "steps": [{"step", "params", "in", "dropped", "by_source": {src: {"in", "dropped"}}}]}``
    (a bare list of steps is read too)."""
    raw = (meta or {}).get("curation_stats") or {}
    totals = raw if isinstance(raw, dict) else {}
    items = raw.get("steps", []) if isinstance(raw, dict) else raw
    steps = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        by_source = item.get("by_source") if isinstance(item.get("by_source"), dict) else {}
        params = item.get("params") or {}
        n_in, dropped = _int(item.get("in")), _int(item.get("dropped"))
        steps.append(
            {
                "index": i + 1,
                "step": str(item.get("step", f"step {i + 1}")),
                "params_json": json.dumps(params, sort_keys=True) if params else "",
                "in": n_in,
                "dropped": dropped,
                "out": n_in - dropped,
                "pct": (100.0 * dropped / n_in) if n_in else 0.0,
                "seconds": item.get("seconds"),
                "by_source": {
                    str(src): {"in": _int(v.get("in")), "dropped": _int(v.get("dropped"))}
                    for src, v in by_source.items()
                    if isinstance(v, dict)
                },
            }
        )
    kept_by_source = totals.get("kept_by_source") if isinstance(totals.get("kept_by_source"), dict) else {}
    summary = {
        key: totals[key]
        for key in ("rows", "in", "kept", "dropped", "seconds")
        if totals.get(key) is not None
    }
    summary["kept_by_source"] = sorted(kept_by_source.items())
    return steps, summary


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _curation_chart(steps: list[dict]) -> dict:
    sources = sorted({src for s in steps for src in s["by_source"]})
    return {
        "steps": [f"{s['index']}. {s['step']}" for s in steps],
        "sources": [
            {
                "name": src or "(no source)",
                "dropped": [s["by_source"].get(src, {}).get("dropped", 0) for s in steps],
                "in": [s["by_source"].get(src, {}).get("in", 0) for s in steps],
            }
            for src in sources
        ],
        # steps without a per-source breakdown still show their total
        "totals": [s["dropped"] for s in steps],
    }


def _row_errors(meta: dict) -> list[dict]:
    out = []
    for item in (meta or {}).get("row_errors") or []:
        if not isinstance(item, dict):
            continue
        unit = "line" if "line" in item else "row"
        out.append({"unit": unit, "n": item.get(unit), "error": item.get("error", "")})
    return out


def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk)
    meta = dataset.meta or {}
    steps, curation_totals = curation_summary(meta)
    versions = list(
        Dataset.objects.filter(project=dataset.project, name=dataset.name)
        .order_by("-version")
        .only("id", "name", "version", "status", "row_count", "created_at")
    )
    children = list(dataset.children.order_by("-created_at").only("id", "name", "version", "status"))
    ready = dataset.status == Dataset.Status.READY
    context = {
        "dataset": dataset,
        "project": dataset.project,
        "meta": meta,
        "steps": steps,
        "curation_totals": curation_totals,
        "step_sources": sorted({src for s in steps for src in s["by_source"]}),
        "recipe_json": json.dumps(meta["recipe"], indent=2) if meta.get("recipe") else "",
        "row_errors": _row_errors(meta),
        "versions": versions,
        "children": children,
        "progress_pct": round(100 * (dataset.progress or 0.0), 1),
    }
    if ready and dataset.kind == Dataset.Kind.PREFERENCE:
        pairs = PreferencePair.objects.filter(dataset=dataset).order_by()
        outcomes = list(pairs.values("kept", "drop_reason").annotate(n=Count("id")).order_by("-kept", "-n"))
        context["kept_count"] = sum(o["n"] for o in outcomes if o["kept"])
        context["dropped"] = [o for o in outcomes if not o["kept"]]
        context["dropped_count"] = sum(o["n"] for o in context["dropped"])
        context["sources"] = list(
            pairs.values("source").annotate(n=Count("id")).order_by("-n", "source")[:50]
        )
    if ready and dataset.kind == Dataset.Kind.PROBLEMS:
        problems = (
            Problem.objects.filter(dataset=dataset)
            .order_by("row")
            .only("id", "row", "domain", "answer", "tests")
            .annotate(excerpt=Substr("prompt", 1, EXCERPT_CHARS))
        )
        context["problems"] = Paginator(problems, PROBLEM_PAGE_SIZE).get_page(request.GET.get("page"))
    context["page_data"] = {
        "id": dataset.id,
        "status": dataset.status,
        "dataset_api": reverse("api-dataset", args=[dataset.pk]),
        "chart": _curation_chart(steps) if steps else None,
    }
    return render(request, "ui/datasets_detail.html", context)


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


# --- curation ----------------------------------------------------------------------------------------


def _recipes_module():
    try:
        from webapp.datasets.curation import recipes
    except ImportError:  # pragma: no cover (the curation package arrives separately)
        return None
    return recipes


def _curation_service():
    try:
        from webapp.datasets.curation import service
    except ImportError:  # pragma: no cover
        return None
    return service


_RST_CODE = re.compile(r"``(.+?)``")


def _doc_html(text: str) -> SafeString:
    return mark_safe(_RST_CODE.sub(r"<code>\1</code>", escape(text)))  # noqa: S308 (escaped first)


def _step_docs(catalogue: list[dict]) -> list[dict]:
    """The step catalogue for the page: descriptions with their ``code`` and each param's default."""
    out = []
    for item in catalogue:
        schema = item.get("schema") or {}
        required = set(schema.get("required") or [])
        params = [
            {
                "name": name,
                "default": json.dumps(prop["default"]) if "default" in prop else "",
                "required": name in required,
                "description": prop.get("description", ""),
            }
            for name, prop in (schema.get("properties") or {}).items()
            if name != "step"
        ]
        out.append(
            {
                "step": item.get("step", ""),
                "title": _doc_html(item.get("title", "")),
                "description": _doc_html(item.get("description", "")),
                "params": params,
                # what "Add to recipe" appends: the defaults, and null for what must be given
                "template": {
                    "step": item.get("step", ""),
                    **{
                        p["name"]: json.loads(p["default"]) if p["default"] else None
                        for p in params
                        if p["required"] or p["default"] not in ("", "null")
                    },
                },
            }
        )
    return out


@require_http_methods(["GET", "POST"])
def curate(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, kind=Dataset.Kind.PREFERENCE)
    recipes = _recipes_module()
    examples = recipes.example_recipes() if recipes else []
    catalogue = _step_docs(recipes.step_catalogue()) if recipes else []
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        text = request.POST.get("recipe", "")
        try:
            data = json.loads(text)
        except ValueError as exc:
            errors = {"recipe": [f"not valid JSON: {exc}"]}
        else:
            new, errors = _run_curation(request, dataset, data)
            if new is not None:
                messages.success(request, f"Curating {dataset} into {new}.")
                return redirect("dataset", pk=new.pk)
    else:
        chosen = request.GET.get("example") or (examples[0]["name"] if examples else "")
        example = next((e for e in examples if e["name"] == chosen), None)
        text = json.dumps(example["recipe"], indent=2) if example else ""
    context = {
        "dataset": dataset,
        "project": dataset.project,
        "examples": examples,
        "catalogue": catalogue,
        "recipe_text": text,
        "errors": [
            f"{k}: {m}" if k not in ("recipe", "__all__") else m for k, msgs in errors.items() for m in msgs
        ],
        "reward_models": reward_models(request.user, dataset),
        "benchmarks": list(
            _datasets(request.user)
            .filter(status=Dataset.Status.READY)
            .exclude(pk=dataset.pk)
            .select_related("project")
            .order_by("project__name", "name", "-version")[:200]
        ),
        "page_data": {
            "examples": examples,
            "templates": {s["step"]: s["template"] for s in catalogue},
            "steps_api": _reverse_or("api-curation-steps", "/api/curation/steps/"),
        },
    }
    return render(request, "ui/curation.html", context, status=400 if errors else 200)


def _reverse_or(name: str, default: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return default


def _run_curation(request: HttpRequest, dataset: Dataset, data) -> tuple[Dataset | None, dict]:
    service = _curation_service()
    if service is None:
        return None, {"recipe": ["curation is not available on this server"]}
    if not isinstance(data, dict):
        return None, {"recipe": ["must be a JSON object"]}
    try:
        new = service.dataset_curate(user=request.user, dataset=dataset, recipe=data)
    except service.CurationError as exc:
        return None, dict(exc.field_errors) or {"recipe": [exc.message]}
    return new, {}
