import contextlib

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

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
# "search" is a stored tsvector of prompt and chosen response with a GIN index (datasets migrations
# 0006 and 0008). With fresh statistics (the import analyzes the table after a large file) the
# planner picks per query: a common word walks the (dataset, row) index, tests the stored vector
# and stops at the first page; a rare one looks its few rows up in the GIN index and sorts them.
SEARCH_SQL = "search @@ websearch_to_tsquery('english', %s)"
# Counting stops here: an exact count of a common word's matches in a million pairs reads all of
# them, while the page itself needs only the first few.
COUNT_CAP = 10_000


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


class CappedPaginator(Paginator):
    """A Paginator whose count stops a little past what the requested page needs (at least
    ``cap``): ``capped`` then says there are more, ``shown_count`` is the number to print with a
    "+". ``total``, when given, is the exact size of an unfiltered list (the dataset's row count),
    used once the count reaches the cap."""

    def __init__(self, object_list, per_page, *, cap: int = COUNT_CAP, total: int | None = None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.cap = cap
        self.total = total
        self.capped = False

    def validate_number(self, number):
        # a page deep in the list raises the cap before anything is counted
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            self.cap = max(self.cap, int(number) * self.per_page)
        return super().validate_number(number)

    @cached_property
    def count(self) -> int:
        n = self.object_list.order_by()[: self.cap + 1].count()
        if n <= self.cap:
            return n
        if self.total is not None and self.total > self.cap:
            return self.total
        self.capped = True
        return n

    @property
    def shown_count(self) -> int:
        return self.count - 1 if self.capped else self.count


def pair_distinct(dataset: Dataset, column: str, *, limit: int, dropped_only: bool = False) -> list[str]:
    """Distinct values of ``source`` or (of dropped pairs) ``drop_reason`` in one dataset, sorted.

    On PostgreSQL a "loose index scan" of the (dataset, source) or (dataset, kept, drop_reason)
    index: one index probe per value, where SELECT DISTINCT reads every row of the dataset."""
    if column not in ("source", "drop_reason"):
        raise ValueError(f"no distinct values of {column!r}")
    qs = PreferencePair.objects.filter(dataset=dataset)
    if dropped_only:
        qs = qs.filter(kept=False)
    if connection.vendor != "postgresql":
        return list(qs.values_list(column, flat=True).distinct().order_by(column)[:limit])
    table = PreferencePair._meta.db_table
    where = '"dataset_id" = %s' + (' AND "kept" = false' if dropped_only else "")
    sql = f"""
        WITH RECURSIVE v(value) AS (
            (SELECT "{column}" FROM {table} WHERE {where} ORDER BY "{column}" LIMIT 1)
            UNION ALL
            SELECT (SELECT "{column}" FROM {table} WHERE {where} AND "{column}" > v.value
                    ORDER BY "{column}" LIMIT 1)
            FROM v WHERE v.value IS NOT NULL
        )
        SELECT value FROM v WHERE value IS NOT NULL LIMIT %s"""
    with connection.cursor() as cur:
        cur.execute(sql, [dataset.pk, dataset.pk, limit])
        return [value for (value,) in cur.fetchall()]
