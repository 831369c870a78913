"""Rewards for a batch of rollouts, scored outside the trainer process (seeds spec 1.6).

`score(domain, completion, reference)` picks the math or the code verifier. `RewardPool` scores a batch in a
pool of worker processes (forkserver: never forked from a threaded trainer) with a per-item time limit. An
item that raises, crashes its worker or overruns gets reward 0 (verdict "error" or "timeout") and the rest of
the batch is still scored; a broken pool is replaced. Results come back in the order of the batch."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from trainers.common.sandbox import require_sandbox
from trainers.common.sandbox_record import announce
from trainers.common.verifiers.code import verify_code
from trainers.common.verifiers.math import verify_math
from trainers.common.verifiers.verdict import Verdict

__all__ = ["DOMAINS", "RewardPool", "Verdict", "score"]

DOMAINS = ("math", "code")
Item = tuple[str, str, Any]  # (domain, completion, reference)
PREFETCH = 2  # items in flight per worker process


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


def _worker_init() -> None:
    # The trainer's Ctrl-C is the trainer's business: workers are shut down by the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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

    `item_timeout_s` bounds one item's scoring; with PREFETCH items in flight per worker, an item queued
    behind another gets one more `item_timeout_s` for its wait. By default it covers the code verifier's
    global limit (300 s) plus slack. `scorer` must be a module-level function (it is pickled by reference)."""

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
        self.restarts = 0  # how many times a broken or stuck pool was replaced
        # sandbox_guards() once a batch had code: the guards its programs ran under
        self.sandbox: dict | None = None

    # ------------------------------------------------------------------------------------------- pool

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.processes, mp_context=self._ctx, initializer=_worker_init
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
        while queue or isolate:
            if isolate:
                batch, limit = [isolate.pop(0)], 1
            else:
                # Two items per worker in flight: the next one is already queued when a worker
                # finishes, so the ~1 ms hand-off per item does not serialise a batch of fast items.
                batch, limit = queue, self.processes * PREFETCH
            self._run(items, batch, limit, results, isolate, suspects)
        return [r if r is not None else Verdict.fail("error", "not scored") for r in results]

    def _run(
        self, items, pending: list[int], limit: int, results: list, isolate: list[int], suspects: set[int]
    ) -> None:
        """Hand out `pending` (consumed in place), at most `limit` in flight, until it is empty or the pool
        breaks (then the in-flight items go to `isolate`, or get an error verdict if already isolated)."""
        in_flight: dict[Future, tuple[int, float]] = {}
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                idx = pending.pop(0)
                try:
                    fut = self._pool().submit(_score_in_worker, self.scorer, *items[idx])
                except Exception as e:  # BrokenProcessPool, pickling errors ...
                    if isinstance(e, BrokenProcessPool | RuntimeError):
                        self._discard_pool()
                        pending.insert(0, idx)
                        self._requeue(in_flight, results, isolate, suspects, "the worker pool broke")
                        return
                    results[idx] = Verdict.fail(
                        "error", f"could not submit the item: {type(e).__name__}: {e}"
                    )
                    continue
                # an item queued behind `depth` others per worker may wait for them before it starts
                depth = len(in_flight) // self.processes
                in_flight[fut] = (idx, time.monotonic() + self.item_timeout_s * (1 + depth))
            if not in_flight:
                continue  # every pending item failed to submit (and has its error verdict)
            next_deadline = min(deadline for _, deadline in in_flight.values())
            done, _ = wait(
                list(in_flight),
                timeout=max(0.0, next_deadline - time.monotonic()),
                return_when=FIRST_COMPLETED,
            )
            broken = False
            for fut in done:
                idx, _ = in_flight.pop(fut)
                try:
                    results[idx] = fut.result()
                except BrokenProcessPool:
                    broken = True
                    self._suspect(idx, results, isolate, suspects, "its worker process died")
                except BaseException as e:
                    results[idx] = Verdict.fail("error", f"{type(e).__name__}: {e}")
            if broken:
                self._discard_pool()
                self._requeue(in_flight, results, isolate, suspects, "its worker process died")
                return
            now = time.monotonic()
            late = [fut for fut, (_, deadline) in in_flight.items() if deadline <= now and not fut.done()]
            if late:
                for fut in late:
                    idx, _ = in_flight.pop(fut)
                    results[idx] = Verdict.fail(
                        "timeout", f"scoring took longer than {self.item_timeout_s:g}s"
                    )
                # The stuck worker can't be cancelled: replace the pool and rerun what shared it.
                self._discard_pool()
                for idx, _ in in_flight.values():
                    pending.insert(0, idx)
                in_flight.clear()
                pending.sort()

    def _suspect(self, idx: int, results: list, isolate: list[int], suspects: set[int], why: str) -> None:
        if idx in suspects:  # it broke the pool while running alone: it is the culprit
            results[idx] = Verdict.fail("error", f"scoring crashed: {why}")
        else:
            suspects.add(idx)
            isolate.append(idx)

    def _requeue(
        self, in_flight: dict, results: list, isolate: list[int], suspects: set[int], why: str
    ) -> None:
        for idx, _ in list(in_flight.values()):
            self._suspect(idx, results, isolate, suspects, why)
        in_flight.clear()
        isolate.sort()


def score_batch(items: Sequence[Item], processes: int = 2, **kwargs) -> list[Verdict]:
    """One-off convenience: a RewardPool for a single batch."""
    with RewardPool(processes, **kwargs) as pool:
        return pool.score_batch(items)
