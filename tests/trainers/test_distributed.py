"""trainers.common.distributed: a world of one (every helper a no-op), and two real gloo ranks for the
collectives and the RankZeroSink (what rank 0 forwards, what every rank agrees on)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from trainers.base import MemorySink
from trainers.common import distributed
from trainers.common.deepspeed_glue import free_port


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("n", [0, 1, 5, 64])
def test_shards_cover_the_batch_in_order_with_sizes_one_apart(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_a_process_without_the_launchers_variables_is_a_world_of_one(tmp_path, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.layout() == distributed.Layout(0, 1, 0, 1)
    assert distributed.init() == distributed.Layout(0, 1, 0, 1) and not distributed.initialized()
    sink = MemorySink(workdir=tmp_path)
    assert distributed.launched_sink(sink) is sink
    assert distributed.all_reduce_sums({"a": 2}) == {"a": 2.0}
    assert distributed.gather_objects("x") == ["x"] and distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.mean_loss_scale(8) == 1 / 8


def test_launcher_variables_are_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    lay = distributed.layout()
    assert (lay.rank, lay.world_size, lay.local_rank, lay.local_world_size) == (3, 4, 1, 2)
    assert lay.distributed and not lay.is_rank_zero


def test_peer_loss_is_told_apart_from_a_cause():
    closed = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:30089")
    assert distributed.is_peer_loss(closed)
    assert not distributed.is_peer_loss(RuntimeError("CUDA out of memory"))
    assert not distributed.is_peer_loss(ValueError("Connection closed by peer"))


class ListingSink(MemorySink):
    """Records which files a checkpoint folder holds when the checkpoint is recorded."""

    listings: list[list[str]]

    def save_checkpoint(self, step, directory, metrics=None):
        self.listings = [*getattr(self, "listings", []), sorted(os.listdir(directory))]
        super().save_checkpoint(step, directory, metrics)


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
    )  # fmt: skip
    out_dir = Path(out)
    distributed.init(timeout_s=60)
    inner = ListingSink(workdir=out_dir / "rank0-workdir") if rank == 0 else None
    if inner is not None:
        inner.stop_after_step = 1
    sink = distributed.RankZeroSink(inner)
    result = {
        "bounds": distributed.shard_bounds(5),
        "sums": distributed.all_reduce_sums({"a": rank + 1, "b": 10.0}),
        "max": distributed.all_reduce_max(float(rank)),
        "gathered": distributed.gather_objects({"rank": rank}),
        "lists": distributed.gather_lists(["a"] if rank == 0 else ["b", "c"]),
        "offset": distributed.offset_and_total(1 if rank == 0 else 2),
        "workdir": str(sink.workdir),
    }
    sink.log(0, {"x": float(rank)})
    result["stop_before"] = sink.should_stop()
    sink.log(1, {"x": float(rank)})
    result["stop_after"] = sink.should_stop()
    directory = sink.checkpoint_dir(1)
    (directory / f"part-{rank}").write_text("written")
    sink.save_checkpoint(1, directory, {"m": 1.0})
    result["dir"] = str(directory)
    if inner is not None:
        result["metrics"] = inner.metrics
        result["checkpoints"] = [[s, str(p)] for s, p, _ in inner.checkpoints]
        result["listings"] = inner.listings
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    distributed.close()


def test_two_ranks_agree_through_the_rank_zero_sink(tmp_path):
    mp.start_processes(_rank, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["bounds"], r1["bounds"]) == ([0, 2], [2, 5])
    assert r0["sums"] == r1["sums"] == {"a": 3.0, "b": 20.0}
    assert r0["max"] == r1["max"] == 1.0
    assert r0["gathered"] == r1["gathered"] == [{"rank": 0}, {"rank": 1}]
    assert r0["lists"] == r1["lists"] == ["a", "b", "c"]
    assert (r0["offset"], r1["offset"]) == ([0, 3], [1, 3])
    assert r0["workdir"] == r1["workdir"] == str(tmp_path / "rank0-workdir")  # rank 0's, broadcast
    # rank 0 decides when to stop, and every rank hears it at the same poll
    assert (r0["stop_before"], r1["stop_before"], r0["stop_after"], r1["stop_after"]) == (False,) * 2 + (
        True,
    ) * 2
    assert r0["metrics"] == {"x": {"0": 0.0, "1": 0.0}}  # only rank 0's values reach the real sink
    assert r0["dir"] == r1["dir"]
    assert r0["checkpoints"] == [[1, r0["dir"]]]  # recorded once...
    assert r0["listings"] == [["part-0", "part-1"]]  # ...after every rank had written its part
