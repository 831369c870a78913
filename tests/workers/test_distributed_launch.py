"""workers.launch's pure parts: the layout a run asks for, the torchrun command line, and which failed
rank is named as the cause (torch's own failure records, as the elastic agent hands them over)."""

from __future__ import annotations

import json
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from workers import launch
from workers.gpu_probe import gpus


def error_file(path: Path, message: str, when: int) -> str:
    """What torch's @record writes for a rank that raised."""
    data = {
        "message": {
            "message": message,
            "extraInfo": {"py_callstack": f"Traceback ...\n{message}\n", "timestamp": str(when)},
        }
    }
    path.write_text(json.dumps(data))
    return str(path)


def test_layout_of_a_config():
    assert launch.process_layout({}) == launch.ProcessLayout(1, 1)
    assert not launch.process_layout({"nproc_per_node": 1, "nodes": 1}).needs_launcher
    assert launch.process_layout({"nproc_per_node": 2}).needs_launcher
    assert launch.process_layout({"nodes": 2}).needs_launcher
    visible = len(gpus()[0])
    assert launch.process_layout({"nproc_per_node": "auto"}).nproc_per_node == (visible or 1)


def test_torchrun_arguments(settings, tmp_path):
    settings.ORLAB_NODE_JOIN_TIMEOUT = 30
    one_host = launch.torchrun_args(
        run_id=7,
        attempt=2,
        layout=launch.ProcessLayout(2, 1),
        node_rank=0,
        endpoint="",
        spec=tmp_path / "spec.json",
    )
    assert "--standalone" in one_host and "--rdzv-backend" not in one_host
    assert one_host[one_host.index("--max-restarts") + 1] == "0"
    assert one_host[one_host.index("-m") + 1 :] == [
        "workers.rank_entry",
        "--run-id",
        "7",
        "--attempt",
        "2",
        "--spec",
        str(tmp_path / "spec.json"),
    ]
    second = launch.torchrun_args(
        run_id=7,
        attempt=2,
        layout=launch.ProcessLayout(1, 2),
        node_rank=1,
        endpoint="h0:2950",
        spec=tmp_path / "spec.json",
    )
    value = lambda flag: second[second.index(flag) + 1]  # noqa: E731
    assert (value("--nnodes"), value("--rdzv-backend"), value("--rdzv-endpoint"), value("--rdzv-id")) == (
        "2",
        "c10d",
        "h0:2950",
        "run-7-2",
    )
    assert value("--rdzv-conf") == "join_timeout=30,is_host=0"  # node 0 hosts the rendezvous store


def test_the_rank_that_failed_first_is_the_cause(tmp_path):
    failures = {
        0: ProcessFailure(
            0,
            100,
            -15,
            error_file(
                tmp_path / "0.json",
                "RankPeerLost: lost contact with another rank: Connection closed by peer",
                5,
            ),
        ),
        1: ProcessFailure(1, 101, 1, error_file(tmp_path / "1.json", "ValueError: boom", 5)),
        2: ProcessFailure(2, 102, -15, str(tmp_path / "none.json")),  # stopped by the agent
    }
    report = launch.describe_failures(failures, "h1")
    assert report["error"].startswith("rank 1 on h1: ValueError: boom\nalso: ")
    assert "ValueError: boom" in report["traceback"] and report["consequence"] is False


def test_a_killed_rank_is_named_with_its_signal(tmp_path):
    failures = {
        0: ProcessFailure(0, 100, -15, str(tmp_path / "none.json")),
        1: ProcessFailure(1, 101, -9, str(tmp_path / "none.json")),
    }
    report = launch.describe_failures(failures, "h1")
    assert report["error"].splitlines()[0] == "rank 1 on h1 died: SIGKILL (exit code -9)"
    assert report["consequence"] is False


def test_only_consequences_are_marked_as_such(tmp_path):
    failures = {
        0: ProcessFailure(0, 100, 1, error_file(tmp_path / "0.json", "RankPeerLost: lost contact", 5))
    }
    assert launch.describe_failures(failures, "h1")["consequence"] is True
