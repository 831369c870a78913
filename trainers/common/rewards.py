"""Rewards for a batch of rollouts, scored outside the trainer process (seeds spec 1.6).

`score(domain, completion, reference)` picks the math or the code verifier. `RewardPool` scores a batch in a
pool of worker processes (forkserver: never forked from a threaded trainer) with a per-item time limit. An
item that raises, crashes its worker or overruns gets reward 0 (verdict "error" or "timeout") and the rest of
the batch is still scored; a broken pool is replaced. Results come back in the order of the batch.

Math items go to the workers in chunks (one task per chunk, not per item: a task's round trip costs the
trainer and the worker about half a millisecond of CPU, as much as scoring a short answer), code items one
per task. The time limit stays per item: before each item a worker writes the item's position and start time
into a shared array (one slot per task in flight), so the pool times out the item that overran, not its chunk."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from trainers.common.sandbox import require_sandbox
from trainers.common.sandbox_record import announce
from trainers.common.verifiers.code import verify_code
from trainers.common.verifiers.math import verify_math
from trainers.common.verifiers.verdict import Verdict

__all__ = ["DOMAINS", "RewardPool", "Verdict", "score"]

DOMAINS = ("math", "code")
Item = tuple[str, str, Any]  # (domain, completion, reference)
PREFETCH = 2  # tasks in flight per worker process
# Chunk sizes shrink as the batch drains (guided scheduling): a chunk takes 1/(CHUNK_SHARE x processes) of
# the items not yet handed out, at most MAX_CHUNK, so the last chunks are small and the workers finish together.
CHUNK_SHARE = 2
MAX_CHUNK = 32
_NOT_STARTED = -1.0

_progress = None  # in a worker: the pool's shared array, (position, start time) per task slot


def score(domain: str, completion: str, reference: Any) -> Verdict:
    """Score one completion: "math" (reference: the answer, or a list of acceptable answers) or "code"
    (reference: the test cases, see verifiers.code). Never raises."""
    try:
        if domain == "math":
            return verify_math(completion, reference)
        if domain == "code":
            return verify_code(completion, reference)
        return Verdict.fail("error", f"unknown domain {domain!r} (expected one of {DOMAINS})")
    except BaseException as e:  # the verifiers don't raise; this is the last line of defence
        return Verdict.fail("error", f"{type(e).__name__}: {e}")


def _score_in_worker(
    scorer: Callable[[str, str, Any], Verdict], domain: str, completion: str, reference: Any
) -> Verdict:
    try:
        verdict = scorer(domain, completion, reference)
        if not isinstance(verdict, Verdict):
            return Verdict.fail("error", f"the scorer returned {type(verdict).__name__}, not a Verdict")
        return verdict
    except BaseException as e:
        return Verdict.fail("error", f"{type(e).__name__}: {e}")


def _score_chunk(
    scorer: Callable[[str, str, Any], Verdict], slot: int, chunk: Sequence[Item]
) -> list[Verdict]:
    """Score a chunk of items in order. Before each item, its position in the chunk and its start time
    (time.monotonic: one clock for all processes on Linux) go to the task's slot, where the pool reads them to
    time out that item. The start time is written first: a reader between the two writes sees the previous
    position with the new (later) start, which only moves that item's deadline later by microseconds."""
    out = []
    progress = _progress
    for pos, item in enumerate(chunk):
        if progress is not None:
            progress[2 * slot + 1] = time.monotonic()
            progress[2 * slot] = float(pos)
        out.append(_score_in_worker(scorer, *item))
    return out


def _worker_init(progress=None) -> None:
    # The trainer's Ctrl-C is the trainer's business: workers are shut down by the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _progress
    _progress = progress


@dataclass
class _Task:
    """One submitted chunk: the batch indices it scores, its progress slot, when it was submitted."""

    idxs: list[int]
    slot: int
    submitted: float


def _preload_forkserver(ctx) -> None:
    """Import the verifiers (sympy, via math_verify, takes about a second) once in the fork server, so that a
    worker replaced after a crash or a timeout starts warm. Only before the fork server starts; `__main__`
    stays in the list (multiprocessing's default)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is not None:
        return
    modules = list(getattr(server, "_preload_modules", None) or ["__main__"])
    for name in ("trainers.common.rewards", "math_verify"):
        if name not in modules:
            modules.append(name)
    ctx.set_forkserver_preload(modules)


class RewardPool:
    """Score batches of (domain, completion, reference) in `processes` worker processes.

    `item_timeout_s` bounds one item's scoring, from the moment its worker starts it (chunks or not). By
    default it covers the code verifier's global limit (300 s) plus slack. `scorer` must be a module-level
    function (it is pickled by reference)."""

    def __init__(
        self,
        processes: int = 2,
        *,
        item_timeout_s: float = 330.0,
        scorer: Callable[[str, str, Any], Verdict] = score,
        context: str | None = None,
    ):
        # forkserver by default (no fork of a threaded trainer); a Celery prefork child cannot use it
        # (its process object carries billiard's auth key, which multiprocessing refuses to pickle),
        # so the worker sets ORLAB_REWARD_MP_CONTEXT=fork there.
        context = context or os.environ.get("ORLAB_REWARD_MP_CONTEXT", "forkserver")
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.processes = processes
        self.item_timeout_s = item_timeout_s
        self.scorer = scorer
        self._ctx = multiprocessing.get_context(context)
        if context == "forkserver":
            _preload_forkserver(self._ctx)
        self._executor: ProcessPoolExecutor | None = None
        # (position in the chunk, start time) of the item each task in flight is scoring, per task slot;
        # shared with the workers (passed at their start, so it outlives a replaced pool)
        self._progress = self._ctx.RawArray("d", 2 * processes * PREFETCH)
        self.restarts = 0  # how many times a broken or stuck pool was replaced
        self.tasks = 0  # tasks (chunks) submitted so far
        # sandbox_guards() once a batch had code: the guards its programs ran under
        self.sandbox: dict | None = None

    # ------------------------------------------------------------------------------------------- pool

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=self._ctx,
                initializer=_worker_init,
                initargs=(self._progress,),
            )
        return self._executor

    def _discard_pool(self) -> None:
        """Kill the workers (one may be stuck in an item) and forget the pool; the next use makes a new one."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self.restarts += 1
        processes = list((getattr(executor, "_processes", None) or {}).values())
        for proc in processes:
            with contextlib.suppress(Exception):
                proc.kill()
        with contextlib.suppress(Exception):
            executor.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            with contextlib.suppress(Exception):
                proc.join(timeout=5)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ score

    def score_batch(self, items: Sequence[Item]) -> list[Verdict]:
        """One Verdict per item, in the order of `items`. Never raises for anything an item does; raises
        SandboxUnavailable for a batch with code when this machine lacks the sandbox's full guards (unless
        ORLAB_SANDBOX_ALLOW_WEAK=1)."""
        if self.sandbox is None and any(item[0] == "code" for item in items):
            self.sandbox = require_sandbox()
            announce(self.sandbox)  # the worker stores them now: a run that fails later still has them
        results: list[Verdict | None] = [None] * len(items)
        queue = list(range(len(items)))  # items not yet handed out, in order
        isolate: list[int] = []  # items that were in flight when the pool broke: rerun one at a time
        suspects: set[int] = set()
        alone: set[int] = set()  # items handed out one per task (their chunk failed to go out)
        while queue or isolate:
            if isolate:
                batch, limit = [isolate.pop(0)], 1
            else:
                # Two tasks per worker in flight: the next one is already queued when a worker
                # finishes, so the hand-off does not leave a worker idle.
                batch, limit = queue, self.processes * PREFETCH
            self._run(items, batch, limit, results, isolate, suspects, alone)
        return [r if r is not None else Verdict.fail("error", "not scored") for r in results]

    def _take(self, items: Sequence[Item], pending: list[int], alone: set[int]) -> list[int]:
        """The next chunk from the front of `pending` (consumed in place): consecutive math items, a share
        of what is left (at most MAX_CHUNK); a code item (seconds of sandboxed programs: a task's
        overhead is nothing to it, and one per task spreads them over the workers) or an item in `alone`
        goes by itself."""
        size = min(MAX_CHUNK, math.ceil(len(pending) / (self.processes * CHUNK_SHARE)))
        n = 0
        while n < len(pending) and (n == 0 or n < size):
            idx = pending[n]
            n += 1
            if idx in alone or items[idx][0] == "code":
                if n > 1:
                    n -= 1  # it starts the next chunk
                break
        chunk = pending[:n]
        del pending[:n]
        return chunk

    def _position(self, task: _Task) -> tuple[int | None, float]:
        """(position in its chunk, start time) of the item `task` is scoring; (None, 0) before it starts."""
        pos = self._progress[2 * task.slot]
        if pos < 0:
            return None, 0.0
        return int(pos), self._progress[2 * task.slot + 1]

    def _run(
        self,
        items: Sequence[Item],
        pending: list[int],
        limit: int,
        results: list,
        isolate: list[int],
        suspects: set[int],
        alone: set[int],
    ) -> None:
        """Hand out `pending` (consumed in place) in chunks, at most `limit` tasks in flight, until it is
        empty or the pool breaks (see _broken). An item that runs longer than item_timeout_s gets a
        timeout verdict; the pool is replaced and the other items in flight go back to `pending`."""
        limit_s = self.item_timeout_s
        in_flight: dict[Future, _Task] = {}
        free = list(range(limit))  # progress slots not used by a task in flight
        activity = time.monotonic()  # when a task last finished
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                idxs = self._take(items, pending, alone)
                slot = free.pop()
                self._progress[2 * slot] = _NOT_STARTED
                self._progress[2 * slot + 1] = time.monotonic()
                try:
                    fut = self._pool().submit(_score_chunk, self.scorer, slot, [items[i] for i in idxs])
                except Exception as e:  # BrokenProcessPool, pickling errors ...
                    free.append(slot)
                    if isinstance(e, BrokenProcessPool | RuntimeError):
                        pending[:0] = idxs
                        self._broken(list(in_flight.values()), pending, results, isolate, suspects,
                                     "the worker pool broke")  # fmt: skip
                        return
                    if len(idxs) > 1:  # find the item that could not go: one per task
                        alone.update(idxs)
                        pending[:0] = idxs
                        continue
                    results[idxs[0]] = Verdict.fail(
                        "error", f"could not submit the item: {type(e).__name__}: {e}"
                    )
                    continue
                self.tasks += 1
                in_flight[fut] = _Task(idxs, slot, time.monotonic())
            if not in_flight:
                continue  # every pending item failed to submit (and has its error verdict)
            done, _ = wait(
                list(in_flight),
                timeout=max(0.0, min(self._deadlines(in_flight, activity).values()) - time.monotonic()),
                return_when=FIRST_COMPLETED,
            )
            broken: list[_Task] = []
            for fut in done:
                task = in_flight.pop(fut)
                try:
                    verdicts = fut.result()
                except BrokenProcessPool:
                    broken.append(task)
                    continue
                except BaseException as e:  # e.g. an item that cannot be pickled
                    free.append(task.slot)
                    if len(task.idxs) > 1:  # resend one per task: only the culprit gets the error
                        alone.update(task.idxs)
                        pending.extend(task.idxs)
                        pending.sort()
                    else:
                        results[task.idxs[0]] = Verdict.fail("error", f"{type(e).__name__}: {e}")
                    continue
                free.append(task.slot)
                activity = time.monotonic()
                for idx, verdict in zip(task.idxs, verdicts, strict=True):
                    results[idx] = verdict
            if broken:
                self._broken(broken + list(in_flight.values()), pending, results, isolate, suspects,
                             "its worker process died")  # fmt: skip
                return
            now = time.monotonic()
            due = self._deadlines(in_flight, activity)
            late = [task for fut, task in in_flight.items() if due[fut] <= now and not fut.done()]
            if not late:
                continue
            for task in late:
                pos, _ = self._position(task)
                if pos is not None:
                    results[task.idxs[pos]] = Verdict.fail(
                        "timeout", f"scoring took longer than {limit_s:g}s"
                    )
                    continue
                for idx in task.idxs:  # no worker took it up: suspects, rerun alone (see _deadlines)
                    if idx in suspects:
                        results[idx] = Verdict.fail("timeout", f"scoring did not start within {limit_s:g}s")
                    else:
                        suspects.add(idx)
                        isolate.append(idx)
            # The stuck worker can't be cancelled: replace the pool and rerun what shared it (the items
            # a chunk had scored before the stuck one included: their verdicts never came back).
            self._discard_pool()
            for task in in_flight.values():
                pending.extend(i for i in task.idxs if results[i] is None and i not in suspects)
            in_flight.clear()
            free = list(range(limit))
            pending.sort()
            isolate.sort()

    def _deadlines(self, in_flight: dict[Future, _Task], activity: float) -> dict[Future, float]:
        """When each task in flight is late. A started one: its current item's start plus item_timeout_s.
        One no worker has started yet: never while another task is scoring (that one has its deadline, and
        the queued ones wait for it); otherwise item_timeout_s after the later of its submission and the
        last task to finish (`activity`): a worker that takes nothing up does not hang the batch."""
        positions = {fut: self._position(task) for fut, task in in_flight.items()}
        scoring = any(pos is not None for pos, _ in positions.values())
        due = {}
        for fut, task in in_flight.items():
            pos, start = positions[fut]
            if pos is not None:
                due[fut] = start + self.item_timeout_s
            elif scoring:
                due[fut] = math.inf
            else:
                due[fut] = max(task.submitted, activity) + self.item_timeout_s
        return due

    def _broken(
        self,
        tasks: list[_Task],
        pending: list[int],
        results: list,
        isolate: list[int],
        suspects: set[int],
        why: str,
    ) -> None:
        """The pool broke with `tasks` in flight: replace it. The item each task was scoring is a suspect
        (rerun alone; a suspect that breaks the pool alone is the culprit); the rest of their items go back
        to `pending`. When no task had started an item, all their items are suspects."""
        positions = [self._position(task)[0] for task in tasks]
        self._discard_pool()
        started = any(pos is not None for pos in positions)
        for task, pos in zip(tasks, positions, strict=True):
            for k, idx in enumerate(task.idxs):
                if not started or k == pos:
                    self._suspect(idx, results, isolate, suspects, why)
                else:
                    pending.append(idx)
        pending.sort()
        isolate.sort()

    def _suspect(self, idx: int, results: list, isolate: list[int], suspects: set[int], why: str) -> None:
        if idx in suspects:  # it broke the pool while running alone: it is the culprit
            results[idx] = Verdict.fail("error", f"scoring crashed: {why}")
        else:
            suspects.add(idx)
            isolate.append(idx)


def score_batch(items: Sequence[Item], processes: int = 2, **kwargs) -> list[Verdict]:
    """One-off convenience: a RewardPool for a single batch."""
    with RewardPool(processes, **kwargs) as pool:
        return pool.score_batch(items)
