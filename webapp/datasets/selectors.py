from django.db import connection
from django.db.models import Q, QuerySet

from webapp.datasets.models import Dataset, PreferencePair

PAIR_ORDERINGS = {
    "row",
    "-row",
    "chosen_len",
    "-chosen_len",
    "rejected_len",
    "-rejected_len",
    "source",
    "-source",
}
# "search" is a stored tsvector of prompt and chosen response with a GIN index (datasets migration 0006).
SEARCH_SQL = "search @@ websearch_to_tsquery('english', %s)"


def pair_list(
    dataset: Dataset,
    *,
    search: str = "",
    source: str = "",
    kept: str = "",
    drop_reason: str = "",
    ordering: str = "row",
) -> QuerySet[PreferencePair]:
    if ordering not in PAIR_ORDERINGS:
        raise ValueError(f"ordering must be one of {sorted(PAIR_ORDERINGS)}")
    qs = PreferencePair.objects.filter(dataset=dataset)
    if search:
        if connection.vendor == "postgresql":
            qs = qs.extra(where=[SEARCH_SQL], params=[search])  # noqa: S610 (parameterised)
        else:
            qs = qs.filter(Q(prompt__icontains=search) | Q(chosen_text__icontains=search))
    if source:
        qs = qs.filter(source=source)
    if kept in ("true", "false", "1", "0"):
        qs = qs.filter(kept=kept in ("true", "1"))
    if drop_reason:
        qs = qs.filter(drop_reason=drop_reason)
    return qs.order_by(ordering, "row") if ordering.lstrip("-") != "row" else qs.order_by(ordering)
