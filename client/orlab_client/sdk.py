"""A ``wandb``-style module API on top of :class:`orlab_client.Client`:

    import orlab_client

    run = orlab_client.init(project="grpo-math", name="qwen-0.5b lr=1e-6", config={"lr": 1e-6})
    for step in range(1000):
        orlab_client.log({"train/loss": loss, "train/reward": reward})   # step 0, 1, 2, ...
    orlab_client.finish()

``ORLAB_URL``, ``ORLAB_TOKEN`` and ``ORLAB_PROJECT`` (an id, or a name) come from the environment
when not passed. A project name resolves on the server (``GET /api/projects/resolve/``): the
caller's own project of that name first, then one they are a member of; several of other owners
are ambiguous (:class:`ProjectError` naming the owners); none is created as the caller's own. All
HTTP, retries, batching and the offline spool are the Client's and Run's: this module only keeps
the current run and the step counter.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from orlab_client.client import Client, OrlabError, Run

_current: ActiveRun | None = None
_guard = threading.Lock()
_hooks_installed = False
_uncaught: str | None = None


class ProjectError(OrlabError):
    """``project=`` / ``ORLAB_PROJECT`` names no single project (e.g. an ambiguous name)."""

    def __init__(self, status: int, body: Any):
        super().__init__(status, body)
        detail = body.get("detail", body) if isinstance(body, dict) else body
        self.args = (str(detail),)


class ActiveRun:
    """The run ``init`` returns. Steps count like wandb's: ``log(d)`` without a step logs at
    ``run.step`` and moves it on by one (unless ``commit=False``); ``log(d, step=k)`` logs at ``k``
    and the next call without a step goes to ``k + 1``. Samples, evaluations and checkpoints
    without a step take the step of the last ``log``."""

    def __init__(self, run: Run, *, project_id: int, name: str, config: dict):
        self._run = run
        self.client = run.client
        self.id = run.id
        self.project_id = project_id
        self.name = name
        self.config = config
        self.step = 0
        self._last_step = 0
        self._ended = False

    # --- logging --------------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, *, commit: bool = True) -> None:
        """Metrics at ``step`` (nested dicts flatten with "/": ``{"train": {"loss": x}}`` is
        ``train/loss``). Values are numbers (numpy and 0-d torch scalars too); NaN and infinities are
        kept as missing values."""
        if not isinstance(data, Mapping):
            raise TypeError("log takes a dict of metrics: run.log({'loss': 0.3}, step=10)")
        self._check_open()
        at = self.step if step is None else _step(step)
        self._run.log(at, _flatten(data))
        self._last_step = at
        if step is not None or commit:
            self.step = at + 1

    def log_samples(self, samples: list[dict], step: int | None = None) -> None:
        """Generations at ``step``: dicts with ``prompt``, ``completion`` and optionally ``reward``,
        ``advantage``, ``verdict``, ``length``, ``truncated``, ``group_index``, ``member_index``,
        ``finish_reason``, ``rewards``, ``extracted_answer``, ``expected_answer`` (or ``reference``),
        ``data_source``, ``phase``, ``checkpoint_step``, ``group_status``, ``tokens``, ``extra``: the
        sample record of ``POST /api/runs/{id}/samples/`` (README, Rollout samples)."""
        self._check_open()
        self._run.log_samples(self._at(step), list(samples))

    def log_evaluation(
        self,
        benchmark: str,
        metrics: Mapping[str, float],
        step: int | None = None,
        protocol: Mapping | None = None,
    ) -> None:
        """An evaluation the script ran itself, e.g. ``log_evaluation("gsm8k", {"pass@1": 0.41})``."""
        self._check_open()
        self._run.log_evaluation(self._at(step), benchmark, dict(metrics), dict(protocol or {}))

    def log_checkpoint(
        self,
        directory: str | os.PathLike,
        step: int | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Upload the checkpoint folder ``directory`` into orlab's artifact store (packed at once;
        the script may delete the folder right after)."""
        self._check_open()
        self._run.log_checkpoint(self._at(step), directory, dict(metrics or {}))

    def flush(self) -> None:
        self._run.flush()

    # --- the end --------------------------------------------------------------------------------
    def finish(self, exit_code: int = 0) -> None:
        """Send what is left and mark the run succeeded (failed when ``exit_code`` is not 0).
        A second call does nothing."""
        if exit_code:
            self.fail(f"exit code {exit_code}")
            return
        if self._close():
            self._run.finish()

    def fail(self, error: str = "") -> None:
        if self._close():
            self._run.fail(error)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def offline(self) -> bool:
        """True once something had to be spooled (``orlab-client sync`` sends it later)."""
        return self._run.offline

    @property
    def url(self) -> str:
        return f"{self.client.url}/runs/{self.id}/"

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        else:
            self.fail(f"{exc_type.__name__}: {exc}")

    def __repr__(self) -> str:
        return f"<orlab run {self.id} {self.name!r} {self.url}>"

    # --- internals ------------------------------------------------------------------------------
    def _close(self) -> bool:
        global _current
        with _guard:
            if self._ended:
                return False
            self._ended = True
            if _current is self:
                _current = None
        return True

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError(f"run {self.id} is finished; call orlab_client.init() for a new one")

    def _at(self, step: int | None) -> int:
        return self._last_step if step is None else _step(step)


def init(
    project: int | str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | Any = None,
    group: str = "",
    tags: list[str] | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    spool_dir: str | os.PathLike | None = None,
    flush_interval: float = 1.0,
    client: Client | None = None,
) -> ActiveRun:
    """Create an external run and make it the current one (a current run still open is finished
    first). ``project`` is an id or a name (default ``$ORLAB_PROJECT``); ``url`` and ``token``
    default to ``$ORLAB_URL`` and ``$ORLAB_TOKEN``; ``config`` is a dict or an argparse Namespace."""
    global _current
    if _current is not None:
        _current.finish()
    client = client or Client(url, token, spool_dir=spool_dir)
    project_id = resolve_project(client, project if project is not None else os.environ.get("ORLAB_PROJECT"))
    if config is not None and not isinstance(config, Mapping):
        config = vars(config)  # argparse.Namespace and the like
    config = dict(config or {})
    name = name or _default_name()
    run = client.create_run(
        project=project_id, name=name, config=config, group=group, tags=list(tags or []),
        flush_interval=flush_interval,
    )  # fmt: skip
    active = ActiveRun(run, project_id=project_id, name=name, config=config)
    with _guard:
        _current = active
    _install_exit_hooks()
    return active


def resolve_project(client: Client, project: int | str | None) -> int:
    """The id of ``project``: an int or a string of digits is an id; any other string is a name
    (resolved by the server, created as the caller's own project when they see none of that name)."""
    if project is None or project == "":
        raise ValueError(
            "a project is needed: orlab_client.init(project=...) or ORLAB_PROJECT (an id or a name)"
        )
    if isinstance(project, bool):
        raise TypeError("project is an id or a name")
    if isinstance(project, int):
        return project
    text = str(project).strip()
    if text.isdigit():
        return int(text)
    for _ in range(2):
        try:
            return int(client.request("GET", "/api/projects/resolve/?" + urlencode({"name": text}))["id"])
        except OrlabError as exc:
            if exc.status == 400:
                raise ProjectError(exc.status, exc.body) from None
            if exc.status != 404:
                raise
        try:
            return int(client.request("POST", "/api/projects/", {"name": text})["id"])
        except OrlabError as exc:
            if exc.status != 400 or "name" not in exc.errors:
                raise
            # created meanwhile by a concurrent init of the same name: resolve it again
    raise ProjectError(400, {"detail": f"could not resolve or create project {text!r}"})


def current() -> ActiveRun | None:
    """The run of the last ``init`` while it is open (wandb's ``wandb.run``)."""
    return _current


def log(data: Mapping[str, Any], step: int | None = None, *, commit: bool = True) -> None:
    _need().log(data, step, commit=commit)


def log_samples(samples: list[dict], step: int | None = None) -> None:
    _need().log_samples(samples, step)


def log_evaluation(
    benchmark: str, metrics: Mapping[str, float], step: int | None = None, protocol: Mapping | None = None
) -> None:
    _need().log_evaluation(benchmark, metrics, step, protocol)


def log_checkpoint(
    directory: str | os.PathLike, step: int | None = None, metrics: Mapping[str, float] | None = None
) -> None:
    _need().log_checkpoint(directory, step, metrics)


def finish(exit_code: int = 0) -> None:
    """Finish the current run (nothing when there is none)."""
    run = _current
    if run is not None:
        run.finish(exit_code)


def _need() -> ActiveRun:
    run = _current
    if run is None:
        raise RuntimeError("no current run: call orlab_client.init(...) first")
    return run


def _step(step: Any) -> int:
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f"a step is an integer >= 0, got {step!r}")
    return int(step)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
            continue
        try:
            out[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"metric {name!r} is {type(value).__name__}, not a number "
                "(text goes into log_samples, files into log_checkpoint)"
            ) from None
    return out


def _default_name() -> str:
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else "run"
    return f"{script}-{time.strftime('%Y%m%d-%H%M%S')}"


def _install_exit_hooks() -> None:
    """At interpreter exit an open current run is finished: failed when an exception ended the
    script (seen through sys.excepthook, which runs before atexit), succeeded otherwise."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        global _uncaught
        _uncaught = f"{exc_type.__name__}: {exc}"
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    atexit.register(_at_exit)


def _at_exit() -> None:
    run = _current
    if run is None:
        return
    if _uncaught is not None:
        run.fail(_uncaught)
    else:
        run.finish()
