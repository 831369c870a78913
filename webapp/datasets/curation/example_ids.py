"""The ids the curate page fills into the example recipes: the project's own benchmark and reward
checkpoint, never the dataset being curated (issue 16: the demo's example named dataset 1, the very
dataset it curated, and checkpoint 1, the synthetic run's, and kept 0 of 2,048 pairs)."""

from __future__ import annotations

from webapp.datasets.models import Dataset
from webapp.selectors.pairs import reward_models

# a held-out / benchmark set is what decontamination is for; other preference sets come after
_BENCHMARK_HINTS = ("bench", "heldout", "held-out", "held_out", "eval", "test")


def example_benchmark(dataset: Dataset) -> int | None:
    """A ready dataset of the same kind and project other than ``dataset`` (and not a version made
    from it), preferring names that say benchmark or held-out."""
    candidates = list(
        Dataset.objects.filter(project_id=dataset.project_id, kind=dataset.kind, status=Dataset.Status.READY)
        .exclude(pk=dataset.pk)
        .order_by("-created_at", "-id")
        .exclude(parent_id=dataset.pk)  # a version made from it holds the same prompts
        .values("id", "name")[:200]
    )
    for c in candidates:
        if any(h in c["name"].lower() for h in _BENCHMARK_HINTS):
            return c["id"]
    return candidates[0]["id"] if candidates else None


def example_checkpoint(user, dataset: Dataset) -> int | None:
    """The newest live checkpoint of a reward model that scored this dataset (the consistency and
    margin steps read its stored scores), among the runs the user can see."""
    scorers = [c for c in reward_models(user, dataset) if c.deleted_at is None]
    if not scorers:
        return None
    return max(scorers, key=lambda c: (c.created_at, c.pk)).pk


def example_ids(user, dataset: Dataset) -> dict[str, int | None]:
    return {"benchmark": example_benchmark(dataset), "checkpoint": example_checkpoint(user, dataset)}
