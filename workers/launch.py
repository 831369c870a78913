"""Starting the ranks of a multi-process run: torch.distributed's elastic launcher, driven by a node task.

A run with ``nproc_per_node`` > 1 or ``nodes`` > 1 is not trained inside the Celery task. Each of its
``nodes`` node tasks (``workers.tasks.execute_run``) claims a node rank (webapp.runs.nodes), writes
the launch spec (kind, materialised config, checkpoint to resume from) and starts

    python -m workers.launch ... -- <torchrun arguments> -m workers.rank_entry --spec SPEC

in a session of its own. That process runs torch.distributed.run (the elastic agent, max_restarts=0),
which starts the ranks; one host joins by ``--standalone``, several by the c10d rendezvous at the
endpoint node 0 recorded, with a join timeout. Rank 0 owns the run's DbSink (metrics, heartbeat,
cancel flag, checkpoints, the final status: workers.rank_entry). The node task meanwhile beats the
heartbeat (node 0; the ranks may take a while to start) and watches the run; when the launcher
fails it records the root cause (the launcher wrote it to ``failure.json``).

No orphans: the launcher dies with its node task (parent-death signal SIGTERM, which makes the agent
stop its ranks) and each rank with the launcher (SIGKILL); every rank runs in its own process group
(the agent's doing) and names its launch folder on its command line, so the launcher and the node
task find and kill those groups (reward pools and other children included) when the launcher ends,
however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARENT_PID_ENV = "ORLAB_LAUNCH_PARENT_PID"  # the node task's pid, for the launcher
LAUNCHER_PID_ENV = "ORLAB_LAUNCHER_PID"  # the launcher's pid, for the ranks
FAILURE_FILE = "failure.json"
SPEC_FILE = "spec.json"
#: After the run stops being this attempt's (finished, lost, resumed), the ranks get this long to exit.
EXIT_GRACE_S = 15.0
#: The agent gives its ranks 30 s after SIGTERM before SIGKILL; the launcher gets a little more.
LAUNCHER_STOP_S = 40.0
#: A node whose failure is only a consequence (a peer went away) waits this long for the node with
#: the cause to record it first.
CONSEQUENCE_DELAY_S = 5.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessLayout:
    nproc_per_node: int
    nodes: int

    @property
    def needs_launcher(self) -> bool:
        return self.nproc_per_node > 1 or self.nodes > 1


def process_layout(config: dict[str, Any]) -> ProcessLayout:
    """The run's layout on this worker: ``auto`` is the GPUs it sees (1 on a CPU worker). Configs of
    trainers without the fields are one process."""
    nproc = config.get("nproc_per_node", 1)
    if nproc == "auto":
        from workers.gpu_probe import gpus

        nproc = len(gpus()[0]) or 1
    return ProcessLayout(nproc_per_node=int(nproc), nodes=int(config.get("nodes", 1)))


def node_address() -> str:
    """The address other hosts reach this one at (the rendezvous endpoint): ORLAB_NODE_ADDR, else the
    host name."""
    return os.environ.get("ORLAB_NODE_ADDR") or socket.gethostname()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def join_timeout_s() -> float:
    from django.conf import settings

    return float(settings.ORLAB_NODE_JOIN_TIMEOUT)


# --- processes ---------------------------------------------------------------------------------------
def die_with_parent(sig: int, parent_pid_env: str) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies; exit now if it already has (the
    parent's pid, from ``parent_pid_env``, is no longer our parent). Elsewhere a no-op."""
    expected = os.environ.get(parent_pid_env)
    if not sys.platform.startswith("linux") or not expected:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != int(expected):
        os._exit(1)


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (Linux /proc; elsewhere none)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def kill_rank_groups(launch_dir: Path) -> None:
    """SIGKILL the process group of every rank started from ``launch_dir``: what is left of a rank that
    died, its reward pool, anything it started. A rank is found by its command line (``--spec`` names
    this folder; forked children keep it) and leads its own group (the agent starts each rank in a
    session of its own); the caller's own group is never touched."""
    own = os.getpgrp()
    for pid in _processes_with(f"{launch_dir / SPEC_FILE}"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != own:
                os.killpg(group, signal.SIGKILL)


def stop_launcher(proc: subprocess.Popen, launch_dir: Path) -> None:
    """Stop a launcher that is still running (SIGTERM: the agent stops its ranks; SIGKILL if it takes
    too long), then kill what is left of the ranks."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=LAUNCHER_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    kill_rank_groups(launch_dir)


# --- the node task -----------------------------------------------------------------------------------
def launch_dir(run_id: int, attempt: int, node_rank: int) -> Path:
    from django.conf import settings

    return (
        Path(settings.ORLAB_ARTIFACTS)
        / "runs"
        / str(run_id)
        / f"attempt-{attempt}"
        / "launch"
        / f"node-{node_rank}"
    )


def torchrun_args(
    *, run_id: int, attempt: int, layout: ProcessLayout, node_rank: int, endpoint: str, spec: Path
) -> list[str]:
    args = ["--nnodes", str(layout.nodes), "--nproc-per-node", str(layout.nproc_per_node)]
    args += ["--max-restarts", "0", "--monitor-interval", "0.5"]
    if layout.nodes == 1:
        args += ["--standalone"]
    else:
        args += [
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            endpoint,
            "--rdzv-id",
            f"run-{run_id}-{attempt}",
        ]
        args += ["--rdzv-conf", f"join_timeout={join_timeout_s():g},is_host={int(node_rank == 0)}"]
        args += ["--local-addr", node_address()]
    return args + [
        "-m",
        "workers.rank_entry",
        "--run-id",
        str(run_id),
        "--attempt",
        str(attempt),
        "--spec",
        str(spec),
    ]


def execute_node(run_id: int, attempt: int, host: str, layout: ProcessLayout) -> None:
    """One node task of a multi-process run: claim a node rank, start the launcher, watch it, and
    record how the attempt ended when the ranks could not (cancel before they started, failure)."""
    from django.conf import settings

    from webapp.runs import nodes, services
    from webapp.runs.models import Run

    endpoint = f"{node_address()}:{free_port()}" if layout.nodes > 1 else ""
    claim = nodes.node_claim(run_id, attempt, host=host, nodes=layout.nodes, endpoint=endpoint)
    if claim is None:
        log.info("run %s attempt %s: no node rank to claim (cancelled, done or all taken)", run_id, attempt)
        return
    coordinator = claim.node_rank == 0
    directory = launch_dir(run_id, attempt, claim.node_rank)
    shutil.rmtree(directory, ignore_errors=True)  # a stale folder (a reused run id in a test database)
    directory.mkdir(parents=True)
    try:
        run = Run.objects.get(pk=run_id)
        resume_from = services.resume_directory(run) if attempt > 1 else None
        spec = {
            "kind": run.kind,
            "config": services.run_materialize_datasets(run),
            "resume_from": str(resume_from) if resume_from else None,
        }
    except Exception as exc:
        services.run_fail(
            run_id, attempt, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
        return
    spec_path = directory / SPEC_FILE
    spec_path.write_text(json.dumps(spec))
    argv = torchrun_args(
        run_id=run_id, attempt=attempt, layout=layout, node_rank=claim.node_rank, endpoint=claim.endpoint,
        spec=spec_path,
    )  # fmt: skip
    env = dict(os.environ)
    env[PARENT_PID_ENV] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.BASE_DIR), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "workers.launch", "--run-id", str(run_id), "--attempt", str(attempt)]
    command += ["--launch-dir", str(directory), "--", *argv]
    with open(directory / "launcher.log", "ab") as out:
        proc = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ended = _watch(
        proc, run_id, attempt, coordinator=coordinator, nodes_wanted=layout.nodes, directory=directory
    )
    if ended == "cancelled":
        services.run_finish(run_id, attempt, cancelled=True, summary={})
    elif ended is None and proc.returncode != 0:
        _record_failure(run_id, attempt, directory, layout)


def _watch(
    proc, run_id: int, attempt: int, *, coordinator: bool, nodes_wanted: int, directory: Path
) -> str | None:
    """Wait for the launcher; returns "cancelled" when a cancel came before every node had joined (the
    ranks, not started, cannot see it), "gone" when the attempt stopped being ours and the launcher
    had to be stopped, None when the launcher ended by itself."""
    from django.conf import settings

    from webapp.runs import nodes, services

    every = settings.ORLAB_HEARTBEAT_INTERVAL
    next_check = 0.0
    deadline = None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return "gone"
            if now >= next_check:
                next_check = now + every
                if coordinator:
                    ours, cancel = services.run_heartbeat(run_id, attempt)
                else:
                    ours, cancel = nodes.attempt_state(run_id, attempt)
                if not ours and deadline is None:
                    deadline = now + EXIT_GRACE_S
                elif ours and cancel and coordinator and nodes.nodes_joined(run_id, attempt) < nodes_wanted:
                    return "cancelled"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.25)
        return None
    finally:
        stop_launcher(proc, directory)


def _record_failure(run_id: int, attempt: int, directory: Path, layout: ProcessLayout) -> None:
    from webapp.runs import nodes, services
    from webapp.runs.models import Run

    try:
        failure = json.loads((directory / FAILURE_FILE).read_text())
    except (OSError, ValueError):
        failure = {"error": f"the launcher exited without a report (see {directory / 'launcher.log'})"}
    if failure.get("rendezvous_timeout"):
        joined = nodes.nodes_joined(run_id, attempt)
        queue = Run.objects.filter(pk=run_id).values_list("queue", flat=True).first()
        failure = {
            "error": f"only {joined} of {layout.nodes} nodes joined within {failure['timeout_s']:g} s "
            f"(each node needs a free worker of queue {queue!r})",
        }
    if failure.get("consequence"):
        # another node is likely recording the cause; ours is a fallback
        deadline = time.monotonic() + CONSEQUENCE_DELAY_S
        while time.monotonic() < deadline:
            if not Run.objects.filter(pk=run_id, attempt=attempt, status=Run.Status.RUNNING).exists():
                return
            time.sleep(0.25)
    services.run_fail(run_id, attempt, error=failure["error"], traceback=failure.get("traceback", ""))


# --- the launcher process ----------------------------------------------------------------------------
def describe_failures(failures: dict[int, Any], host: str) -> dict[str, Any]:
    """The root cause among the failed ranks (torch's ProcessFailure objects): a rank that raised or
    was killed, before a rank that only lost its peers or was stopped by the agent (SIGTERM)."""

    def parts(rank: int, f: Any) -> tuple[str, str, bool]:
        if os.path.isfile(f.error_file):  # the rank recorded its exception (torch's @record)
            data = f.message if isinstance(f.message, dict) else {"message": f.message}
            text = str(data.get("message", ""))
            trace = str(data.get("extraInfo", {}).get("py_callstack", ""))
            return f"rank {rank} on {host}: {text}", trace, text.startswith("RankPeerLost")
        if f.exitcode < 0:
            name = f.signal_name()
            return f"rank {rank} on {host} died: {name} (exit code {f.exitcode})", "", name == "SIGTERM"
        return f"rank {rank} on {host} exited with code {f.exitcode}", "", False

    described = sorted(
        ((p[2], f.timestamp, rank, p[0], p[1]) for rank, f in failures.items() for p in [parts(rank, f)]),
        key=lambda x: x[:3],
    )
    consequence, _, _, message, trace = described[0]
    others = [d[3] for d in described[1:]]
    if others:
        message += "\nalso: " + "; ".join(others)
    return {"error": message, "traceback": trace, "consequence": consequence}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.launch")
    parser.add_argument("--run-id", type=int, required=True)  # in the command line to find strays by
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--launch-dir", type=Path, required=True)
    parser.add_argument("torchrun", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.torchrun[1:] if args.torchrun[:1] == ["--"] else args.torchrun
    # SIGTERM, not SIGKILL: the elastic agent handles it by stopping its ranks
    die_with_parent(signal.SIGTERM, PARENT_PID_ENV)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError
    from torch.distributed.run import get_args_parser, run

    failure: dict[str, Any] | None = None
    torch_args = get_args_parser().parse_args(rest)
    try:
        run(torch_args)
    except ChildFailedError as exc:
        failure = describe_failures(exc.failures, socket.gethostname())
    except RendezvousTimeoutError:
        conf = dict(kv.split("=", 1) for kv in torch_args.rdzv_conf.split(",") if "=" in kv)
        failure = {"rendezvous_timeout": True, "timeout_s": float(conf.get("join_timeout", 600))}
    except BaseException as exc:  # SignalException (we were stopped), rendezvous errors, bugs
        failure = {
            "error": f"launcher on {socket.gethostname()}: {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "consequence": isinstance(exc, RendezvousError) or type(exc).__name__ == "SignalException",
        }
    finally:
        kill_rank_groups(args.launch_dir)
    if failure is None:
        return 0
    (args.launch_dir / FAILURE_FILE).write_text(json.dumps(failure))
    return 1


if __name__ == "__main__":
    sys.exit(main())
