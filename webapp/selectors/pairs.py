"""The pair query: one reading of the query string for the pair browser (``/datasets/<id>/pairs/`` and one
pair's page, which moves within the list) and ``GET /api/datasets/<id>/pairs/``, so the same parameters
select the same pairs in the same order.

Filters: ``q`` (full text over prompt and chosen response; ``search`` is the old spelling), ``source``,
``kept`` (true/false, also 1/0), ``drop_reason``, ``min_len`` / ``max_len`` (the chosen response's
length, inclusive). ``rm=<checkpoint id>``: a reward model that scored the dataset; its margin (chosen -
rejected score) is annotated as ``margin``. Ordering: ``ordering=[-]row|chosen_len|rejected_len|source|
margin`` (margin needs ``rm``; pairs the model did not score are listed last either way); ties by row.

``strict`` (the API): a bad parameter raises ``ServiceError`` naming it (a 400). Otherwise (the pages) it is
ignored: an unknown ordering, or margin without a reward model, lists by row.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Exists, F, FilteredRelation, Max, OuterRef, Q

from webapp.datasets import selectors as dataset_selectors
from webapp.datasets.models import Dataset, PairScore, PreferencePair
from webapp.errors import ServiceError
from webapp.runs import selectors as run_selectors
from webapp.runs.models import Checkpoint

PAIR_PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_QUERY_CHARS = 500
MAX_SCORERS = 200  # reward models offered in the pair browser
SCORERS_CACHE_SECONDS = 600
MAX_LEN = 2**31 - 1
# Sortable columns: ?ordering=<key> or -<key>; ties go by row.
PAIR_SORT_KEYS = ("row", "chosen_len", "rejected_len", "source", "margin")
SINGLE_TYPED = ("kept", "min_len", "max_len", "rm", "ordering")
KEPT_VALUES = {"true": "true", "1": "true", "false": "false", "0": "false"}


def reward_models(user, dataset: Dataset) -> list[Checkpoint]:
    """Checkpoints (of runs the user can see) that scored pairs of this dataset.

    Finding them reads every pair of the dataset (PairScore has no dataset column), so the answer
    is cached until a new score is stored anywhere (the newest PairScore id is in the key)."""
    newest = PairScore.objects.aggregate(m=Max("id"))["m"] or 0
    key = f"orlab:dataset-scorers:{dataset.id}:{user.pk}:{newest}"
    ids = cache.get(key)
    if ids is None:
        scored = PairScore.objects.filter(checkpoint=OuterRef("pk"), pair__dataset=dataset)
        ids = list(
            Checkpoint.objects.filter(run__in=run_selectors.run_list(user=user))
            .filter(Exists(scored))
            .values_list("id", flat=True)[:MAX_SCORERS]
        )
        cache.set(key, ids, SCORERS_CACHE_SECONDS)
    return list(
        Checkpoint.objects.filter(pk__in=ids, run__in=run_selectors.run_list(user=user))
        .select_related("run")
        .order_by("run__name", "run_id", "-step")
    )


def reward_model(user, dataset: Dataset, pk: int | None) -> Checkpoint | None:
    """The checkpoint ``pk``, if the user can see it and it scored this dataset."""
    if pk is None:
        return None
    checkpoint = (
        Checkpoint.objects.filter(run__in=run_selectors.run_list(user=user), pk=pk)
        .select_related("run")
        .first()
    )
    if (
        checkpoint is None
        or not PairScore.objects.filter(checkpoint=checkpoint, pair__dataset=dataset).exists()
    ):
        return None
    return checkpoint


def int_param(raw: str | None) -> int | None:
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if 0 <= value <= MAX_LEN else None


class PairQuery:
    """The pair list's state, read from the query string (so every view of it is a shareable URL),
    and the queryset it selects: filters, the chosen reward model's margin, and the ordering.

    ``list_reward_models``: also list the reward models that scored the dataset (the browser's
    picker); otherwise only ``rm`` is looked up."""

    def __init__(
        self, params, dataset: Dataset, *, user, strict: bool = False, list_reward_models: bool = True
    ):
        p = params
        self.dataset = dataset
        self.strict = strict

        def bad(name: str, message: str) -> None:
            if strict:
                raise ServiceError("invalid query", {name: [message]})

        if strict and hasattr(p, "getlist"):
            for name in SINGLE_TYPED:  # the schema's integers, boolean and enum: not "" and not repeated
                values = p.getlist(name)
                if name in p and (len(values) != 1 or not values[0].strip()):
                    bad(name, "a value, given once")
        q_name = "q" if "q" in p else "search"
        self.q = (p.get(q_name) or "").strip()
        if len(self.q) > MAX_QUERY_CHARS:
            bad(q_name, f"at most {MAX_QUERY_CHARS} characters")
            self.q = self.q[:MAX_QUERY_CHARS]
        self.source = p.get("source", "")
        raw_kept = p.get("kept", "")
        self.kept = KEPT_VALUES.get(raw_kept.lower(), "")
        if raw_kept and not self.kept:
            bad("kept", "true or false")
        self.drop_reason = p.get("drop_reason", "")
        self.min_len = self._length(p, "min_len", bad)
        self.max_len = self._length(p, "max_len", bad)
        rm_id = int_param(p.get("rm"))
        if p.get("rm") not in (None, "") and rm_id is None:
            bad("rm", "a checkpoint id")
        if list_reward_models:
            self.reward_models = reward_models(user, dataset)
            self.rm = {c.id: c for c in self.reward_models}.get(rm_id)
        else:
            self.reward_models = []
            self.rm = reward_model(user, dataset, rm_id)
        if rm_id is not None and self.rm is None:
            bad("rm", "no reward model of yours scored this dataset with that id")
        ordering = (p.get("ordering") or "row").strip()
        key = ordering.lstrip("-")
        if key not in PAIR_SORT_KEYS:
            bad("ordering", f"one of {', '.join(PAIR_SORT_KEYS)}, - for descending")
            ordering, key = "row", "row"
        elif key == "margin" and self.rm is None:
            bad("ordering", "margin needs a reward model (rm=<checkpoint id>)")
            ordering, key = "row", "row"
        self.ordering, self.key, self.desc = ordering, key, ordering.startswith("-")
        try:
            self.page_size = int(p.get("page_size", DEFAULT_PAGE_SIZE))
        except ValueError:
            self.page_size = DEFAULT_PAGE_SIZE
        if self.page_size not in PAIR_PAGE_SIZES:
            self.page_size = DEFAULT_PAGE_SIZE  # the pages' sizes; the API's paginator reads its own

    @staticmethod
    def _length(p, name: str, bad) -> int | None:
        raw = p.get(name)
        value = int_param(raw)
        if raw not in (None, "") and value is None:
            bad(name, f"an integer from 0 to {MAX_LEN}")
        return value

    @property
    def params(self) -> dict:
        """The state as query parameters (defaults left out), without the page."""
        return {
            "q": self.q,
            "source": self.source,
            "kept": self.kept,
            "drop_reason": self.drop_reason,
            "min_len": self.min_len,
            "max_len": self.max_len,
            "rm": self.rm.id if self.rm else "",
            "ordering": self.ordering if self.ordering != "row" else "",
            "page_size": self.page_size if self.page_size != DEFAULT_PAGE_SIZE else "",
        }

    @property
    def filtered(self) -> bool:
        return bool(
            self.q or self.source or self.kept or self.drop_reason
            or self.min_len is not None or self.max_len is not None
        )  # fmt: skip

    def queryset(self):
        qs = dataset_selectors.pair_list(
            self.dataset, search=self.q, source=self.source, kept=self.kept, drop_reason=self.drop_reason
        )
        if self.min_len is not None:
            qs = qs.filter(chosen_len__gte=self.min_len)
        if self.max_len is not None:
            qs = qs.filter(chosen_len__lte=self.max_len)
        if self.rm is not None:
            # a LEFT JOIN on this reward model's score: pairs it did not score stay, with no margin
            qs = qs.annotate(
                rm_score=FilteredRelation("scores", condition=Q(scores__checkpoint_id=self.rm.id))
            ).annotate(margin=F("rm_score__margin"))
        return qs.order_by(*self.order_by())

    def paginator(self, queryset, per_page: int) -> dataset_selectors.CappedPaginator:
        """Counts stop at a cap (a common word matches most of a million pairs); unfiltered, the
        dataset knows its size."""
        return dataset_selectors.CappedPaginator(
            queryset,
            per_page,
            total=None if self.filtered else self.dataset.row_count,
            search=bool(self.q),
            by_row=self.key == "row",
        )

    def order_by(self, reverse: bool = False) -> list:
        desc = self.desc != reverse
        # A plain "row" leaves the plan to PostgreSQL (datasets.selectors.SEARCH_SQL): a common word
        # walks the (dataset, row) index and stops at the first page, a rare one uses the GIN index.
        row = F("row")
        if self.key == "row":
            return [row.desc() if desc else row.asc()]
        nulls = {"nulls_first": True} if reverse else {"nulls_last": True}  # no margin: listed last
        first = F(self.key).desc(**nulls) if desc else F(self.key).asc(**nulls)
        return [first, row.desc() if reverse else row.asc()]

    def _around(self, value, row: int) -> tuple[Q, Q]:
        """(before, after): the pairs listed before and after the pair at (value, row)."""
        if self.key == "row":
            lower, higher = Q(row__lt=row), Q(row__gt=row)
            return (higher, lower) if self.desc else (lower, higher)
        k = self.key
        if value is None:  # no margin: listed last, by row
            null = Q(**{f"{k}__isnull": True})
            return Q(**{f"{k}__isnull": False}) | (null & Q(row__lt=row)), null & Q(row__gt=row)
        ahead, behind = (f"{k}__gt", f"{k}__lt") if self.desc else (f"{k}__lt", f"{k}__gt")
        before = Q(**{ahead: value}) | Q(**{k: value}, row__lt=row)
        after = Q(**{behind: value}) | Q(**{k: value}, row__gt=row) | Q(**{f"{k}__isnull": True})
        return before, after

    def neighbours(self, pair: PreferencePair) -> dict:
        qs = self.queryset()
        if self.key == "margin":
            value = (
                PairScore.objects.filter(pair=pair, checkpoint=self.rm)
                .values_list("margin", flat=True)
                .first()
            )
        else:
            value = getattr(pair, self.key)
        before, after = self._around(value, pair.row)
        rows = qs.values_list("row", flat=True)
        position = qs.filter(before).count() + 1
        return {
            "prev": rows.filter(before).order_by(*self.order_by(reverse=True)).first(),
            "next": rows.filter(after).first(),
            "position": position,
            "total": qs.count(),
            "in_list": qs.filter(pk=pair.pk).exists(),
        }
