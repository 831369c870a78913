"""The embedded default's broker (workers/fs_transport.py) hands out messages first in, first out,
also when the number a message is named by gains a digit (kombu's stock names are milliseconds
since boot: "9999999_..." was written before "10000000_..." but sorts after it as text)."""

import os

from kombu import Connection

from workers import fs_transport


def _connection(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    control = tmp_path / "control"  # kombu's default is ./control, in whatever directory pytest runs
    control.mkdir()
    # kombu remembers declared exchanges per process and then skips writing their binding files into
    # a new control folder: forget them, so each test's folder is complete.
    fs_transport.Transport.global_state.clear()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(control),
        "store_processed": False,
    }
    return Connection(transport="workers.fs_transport:Transport", transport_options=options), folder


def _drain(queue) -> list:
    bodies = []
    while True:
        try:
            message = queue.get(block=False)
        except queue.Empty:
            return bodies
        bodies.append(message.payload)
        message.ack()


def test_messages_whose_names_straddle_a_digit_boundary_come_out_in_the_order_written(tmp_path):
    conn, folder = _connection(tmp_path)
    with conn:
        queue = conn.SimpleQueue("cpu")
        # Real messages, then renamed to what they would be called at chosen times: two by the
        # stock transport just before and after its uptime counter gains a digit, two by ours just
        # before and after the wall clock in nanoseconds gains one.
        times = {
            "stock 9999 ms": "9999_11111111-0000-0000-0000-000000000000",
            "stock 10000 ms": "10000_00000000-0000-0000-0000-000000000000",
            "ours 10^18-1 ns": fs_transport.message_name("x", 10**18 - 1).partition(".")[0],
            "ours 10^18 ns": fs_transport.message_name("x", 10**18).partition(".")[0],
        }
        for body in reversed(times):  # written in the opposite order, so os.listdir's order cannot help
            queue.put(body)
            (newest,) = [n for n in os.listdir(folder) if n.partition("_")[0] not in _stamps(times)]
            os.rename(folder / newest, folder / f"{times[body]}.cpu.msg")
        queue.put("now")  # named by the transport itself, at today's time
        assert _drain(queue) == [*times, "now"]
        queue.close()


def _stamps(times: dict) -> set:
    return {name.partition("_")[0] for name in times.values()}


def test_many_messages_keep_their_order_and_other_queues_are_left_alone(tmp_path):
    conn, folder = _connection(tmp_path)
    with conn:
        cpu, short = conn.SimpleQueue("cpu"), conn.SimpleQueue("short")
        for i in range(50):
            cpu.put(i)
            short.put(-i)
        assert _drain(cpu) == list(range(50))
        assert len(os.listdir(folder)) == 50  # the short queue's messages, untouched
        assert _drain(short) == [-i for i in range(50)]
        assert os.listdir(folder) == []  # nothing claimed is left behind
        cpu.close()
        short.close()


def test_the_embedded_default_uses_this_transport(tmp_path):
    """Without DATABASE_URL and CELERY_BROKER_URL the settings name the alias registered for it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(ORLAB_VAR_DIR=str(tmp_path / "var"))
    code = (
        "from workers.celery import app; c = app.connection_for_write(); "
        "print(type(c.transport).__module__, c.transport.Channel.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["workers.fs_transport", "workers.fs_transport"]
