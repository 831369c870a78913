"""What the drill counts: stored vs expected points, samples and evaluations; peak memory of processes.
Pure functions over plain data (and /proc), so they are testable without a deployment."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Tally:
    """Items expected once each vs what the database holds: ``lost`` never stored, ``duplicated``
    stored more than once (extra copies), ``unexpected`` stored but never logged."""

    expected: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.expected, self.stored, self.lost, self.duplicated, self.unexpected)

    def text(self) -> str:
        if not self.expected and not self.stored:
            return "-"
        extra = f", {self.unexpected} unexpected" if self.unexpected else ""
        return f"{self.lost} / {self.duplicated}{extra} (of {self.expected})"


def tally(expected: Iterable, stored: Iterable) -> Tally:
    """Compare identities (e.g. (key, step) pairs) expected exactly once with those stored."""
    want = set(expected)
    have = Counter(stored)
    return Tally(
        expected=len(want),
        stored=sum(have.values()),
        lost=len(want - set(have)),
        duplicated=sum(n - 1 for n in have.values() if n > 1),
        unexpected=sum(n for k, n in have.items() if k not in want),
    )


def synthetic_expected(steps: int, keys: list[str], samples_every: int, evaluate_every: int):
    """What a synthetic run (trainers/synthetic) of ``steps`` steps logs: (key, step) points,
    (step, sample index) samples and evaluation steps."""
    points = [(k, s) for s in range(steps) for k in keys]
    samples = [(s, i) for s in range(0, steps, samples_every) for i in range(2)] if samples_every else []
    evaluations = list(range(0, steps, evaluate_every)) if evaluate_every else []
    return points, samples, evaluations


def sample_identity(step: int, prompt: str) -> tuple[int, int]:
    """A synthetic sample's (step, index), from its prompt "synthetic prompt <step>.<index>"."""
    tail = prompt.rsplit(" ", 1)[-1]
    s, _, i = tail.partition(".")
    return (int(s), int(i)) if s.isdigit() and i.isdigit() else (step, -1)


def fmt_seconds(value: float | None, *, cap: float | None = None, missing: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing or (f"> {cap:.0f} s" if cap else "-")
    return f"{value:.1f} s"


# --- memory ------------------------------------------------------------------------------------------


def _status_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs; needs the right to ptrace it)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out.extend(int(x) for x in text.split())
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children(p))
    return seen


@dataclass
class PeakWatch:
    """Samples the RSS of a set of processes (re-listed every round: workers come and go) every
    ``interval`` s and remembers each one's peak above its first-seen size. A process beyond
    ``kill_above_mb`` is killed (SIGKILL) so a runaway upload cannot take the shared machine down;
    it is reported as such."""

    pids_of: object  # () -> dict[int, str]: pid -> label
    interval: float = 0.02
    kill_above_mb: float = 3072.0
    base: dict[int, float] = field(default_factory=dict)
    peak: dict[int, float] = field(default_factory=dict)
    label: dict[int, str] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._round()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _round(self) -> None:
        import signal

        for pid, label in self.pids_of().items():
            mb = rss_mb(pid)
            if mb is None:
                continue
            self.label[pid] = label
            if pid not in self.base:
                self.base[pid] = mb
                reset_peak(pid)
            # the kernel's high-water mark catches a spike between two samples
            hwm = _status_kb(pid, "VmHWM")
            self.peak[pid] = max(self.peak.get(pid, 0.0), mb, (hwm or 0) / 1024)
            if mb > self.kill_above_mb:
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(f"{label} (pid {pid}) at {mb:.0f} MB")
                except OSError:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._round()
            time.sleep(self.interval)

    def worst(self) -> tuple[str, float]:
        """The process that grew most above its first-seen RSS, and by how many MB."""
        if not self.peak:
            return ("-", 0.0)
        pid = max(self.peak, key=lambda p: self.peak[p] - self.base[p])
        grew = self.peak[pid] - self.base[pid]
        return (self.label[pid], grew) if grew >= 1 else ("-", grew)  # under 1 MB: no process stands out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)
