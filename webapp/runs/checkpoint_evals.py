"""The checkpoint x benchmark table of a run (issue 15 point 6): rows are the run's checkpoints, columns
a benchmark under one protocol x a metric (pass@k, maj@k, pass^k, avg@n), cells the evaluation's value
with its 95 % interval (``<name>_ci`` in the stored metrics) or its status while queued or running.

Evaluations with different protocols (n, temperature, top-p, max tokens) never share a column, as they
never share a line in the evaluations chart: their numbers are not comparable. When one checkpoint has
several evaluations in a column (evaluated twice with the same protocol), the newest is shown."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webapp.runs.models import Checkpoint, Evaluation, Run

#: the metric families a column shows, in this order: a policy's (trainers.eval.core), then a reward
#: model's held-out pairwise accuracies (trainers.reward.train: accuracy, RewardBench sections, overall);
#: the rest (rates, subsets, margins) are on the evaluation's page
FAMILIES = ("pass@", "pass^", "maj@", "avg@", "accuracy", "section/", "overall")
_METRIC = re.compile(r"^(pass@|pass\^|maj@|avg@)(\d+)$|^(accuracy|overall)$|^(section/)([A-Za-z0-9_.\-]+)$")
ACTIVE = (Evaluation.Status.QUEUED, Evaluation.Status.RUNNING, Evaluation.Status.WAITING)


@dataclass
class Column:
    key: tuple
    benchmark: str
    protocol: str  # "n=8 T=0.6 top-p=1 max 512" (what tells two columns of a benchmark apart)
    metrics: list[str] = field(default_factory=list)


@dataclass
class Cell:
    evaluation: Evaluation | None
    value: float | None = None
    ci: tuple[float, float] | None = None


@dataclass
class Row:
    checkpoint: Checkpoint
    cells: list[Cell]  # one per (column, metric), flattened in the header's order


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    active: bool  # an evaluation is queued or running: the page refreshes the table

    @property
    def width(self) -> int:
        return sum(max(1, len(c.metrics)) for c in self.columns)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def protocol_label(protocol: Mapping[str, Any], k: int) -> str:
    parts = [f"n={protocol.get('k', k)}"]
    for key, name in (("temperature", "T"), ("top_p", "top-p"), ("max_new_tokens", "max")):
        if protocol.get(key) is not None:
            parts.append(f"{name}={_number(protocol[key])}")
    return " ".join(parts)


def _column_key(ev: Evaluation) -> tuple:
    p = ev.protocol or {}
    return (
        ev.benchmark_name,
        p.get("k", ev.k),
        p.get("temperature"),
        p.get("top_p"),
        p.get("max_new_tokens"),
    )


def metric_order(name: str) -> tuple[int, int, str]:
    family, k, plain, section, section_name = _METRIC.match(name).groups()
    if family:
        return FAMILIES.index(family), int(k), ""
    if plain:
        return FAMILIES.index(plain), 0, ""
    return FAMILIES.index(section), 0, section_name


def table_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """The metric names of ``metrics`` the table shows (numbers of a known family), in display order."""
    names = [m for m, v in metrics.items() if _METRIC.match(m) and isinstance(v, int | float)]
    return sorted(names, key=metric_order)


def checkpoint_table(run: Run, checkpoints: Iterable[Checkpoint] | None = None) -> Table:
    """The table of ``run`` (``checkpoints``: the run page's list, or the run's own in step order)."""
    rows_of = list(checkpoints) if checkpoints is not None else list(run.checkpoints.order_by("step"))
    rows_of.sort(key=lambda c: c.step)
    evaluations = (
        Evaluation.objects.filter(run=run, checkpoint__isnull=False)
        .only("id", "checkpoint_id", "benchmark_name", "k", "status", "metrics", "protocol", "error", "step")
        .order_by("id")
    )
    columns: dict[tuple, Column] = {}
    newest: dict[tuple[int, tuple], Evaluation] = {}
    for ev in evaluations:
        key = _column_key(ev)
        column = columns.get(key)
        if column is None:
            column = columns[key] = Column(key, ev.benchmark_name, protocol_label(ev.protocol or {}, ev.k))
        for name in table_metrics(ev.metrics or {}):
            if name not in column.metrics:
                column.metrics.append(name)
        newest[(ev.checkpoint_id, key)] = ev  # by id: the newest wins
    ordered = sorted(columns.values(), key=lambda c: (c.benchmark, c.protocol))
    for column in ordered:
        column.metrics.sort(key=metric_order)
    rows = []
    for checkpoint in rows_of:
        cells = []
        for column in ordered:
            ev = newest.get((checkpoint.id, column.key))
            for name in column.metrics or [None]:
                cells.append(_cell(ev, name))
        rows.append(Row(checkpoint, cells))
    active = any(ev.status in ACTIVE for ev in newest.values())
    return Table(ordered, rows, active)


def _cell(ev: Evaluation | None, name: str | None) -> Cell:
    if ev is None or ev.status != Evaluation.Status.SUCCEEDED or name is None:
        return Cell(ev)
    value = (ev.metrics or {}).get(name)
    ci = (ev.metrics or {}).get(f"{name}_ci")
    numbers = isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci)
    interval = (float(ci[0]), float(ci[1])) if numbers else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return Cell(ev)
    return Cell(ev, float(value), interval)
