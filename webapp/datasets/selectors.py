import contextlib

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

from webapp.datasets.models import Dataset, PreferencePair
from webapp.planner import planner_settings

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
# 0006 and 0008). How a page of a search is planned: CappedPaginator.
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


# What a search's plan may use (session settings, for one query). Bitmap: look the words up in the
# GIN index, then sort what matched; cheap while the matches are few, and the only bounded way to
# count them. Walk: go down the (dataset, row) index, test each row's stored vector, stop at the end
# of the page; cheap when matches are many. The planner's own choice rests on an estimate of the
# matches, which can miss by 100x (and a short last page, LIMIT 7, tips it towards the walk, which
# for a word in 7 rows of a million reads them all); the count tells which case it is.
# (work_mem: a common word's bitmap over a million rows stays exact, not lossy pages to recheck)
_BITMAP = {
    "enable_seqscan": "off",
    "enable_indexscan": "off",
    "enable_indexonlyscan": "off",
    "work_mem": "32MB",
}
_WALK = {"enable_seqscan": "off", "enable_bitmapscan": "off"}


_planner = planner_settings  # one mechanism for both searches (webapp.planner)


class CappedPaginator(Paginator):
    """A Paginator whose count stops a little past what the requested page needs (at least
    ``cap``): ``capped`` then says there are more, ``shown_count`` is the number to print with a
    "+". ``total``, when given, is the exact size of an unfiltered list (the dataset's row count),
    used once the count reaches the cap.

    ``search``: the list is a full-text search, so the count and the page are planned from the
    count (see _BITMAP and _WALK); ``by_row``: it is listed by row (the walk can serve it)."""

    def __init__(
        self,
        object_list,
        per_page,
        *,
        cap: int = COUNT_CAP,
        total: int | None = None,
        search: bool = False,
        by_row: bool = True,
        **kwargs,
    ):
        super().__init__(object_list, per_page, **kwargs)
        self.cap = cap
        self.total = total
        self.search = search
        self.by_row = by_row
        self.capped = False

    def validate_number(self, number):
        # a page deep in the list raises the cap (and a count that stopped short is taken again)
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            wanted = int(number) * self.per_page
            if wanted > self.cap:
                self.cap = wanted
                if self.capped:
                    self.capped = False
                    self.__dict__.pop("count", None)
                    self.__dict__.pop("num_pages", None)
        return super().validate_number(number)

    @cached_property
    def count(self) -> int:
        with _planner(_BITMAP) if self.search else contextlib.nullcontext():
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

    def page(self, number):
        page = super().page(number)
        if self.search:
            many = self.capped and self.by_row
            with _planner(_WALK if many else _BITMAP):
                page.object_list = list(page.object_list)
        return page


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
