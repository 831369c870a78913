"""The drill's counting and memory helpers (bench/drill/measure.py); the drill itself is `make drill`,
not part of the suite."""

import subprocess
import sys

from bench.drill.measure import PeakWatch, markdown_table, sample_identity, synthetic_expected, tally


def test_tally_counts_lost_duplicated_and_unexpected():
    t = tally([1, 2, 3, 4], [1, 1, 1, 2, 4, 9])
    assert (t.expected, t.stored, t.lost, t.duplicated, t.unexpected) == (4, 6, 1, 2, 1)
    assert t.text() == "1 / 2, 1 unexpected (of 4)"
    assert (t + tally([5], [5])).expected == 5


def test_synthetic_expected_matches_what_the_trainer_logs():
    from trainers.synthetic.config import SyntheticConfig
    from trainers.synthetic.train import key_names, train

    class Sink:  # the trainers' sink protocol, recording what a run logs
        resume_from = None

        def __init__(self):
            self.points, self.samples, self.evals = [], [], []

        def log(self, step, metrics):
            self.points += [(k, step) for k in metrics]

        def log_samples(self, step, samples):
            self.samples += [sample_identity(step, s["prompt"]) for s in samples]

        def log_evaluation(self, step, benchmark, metrics, protocol):
            self.evals.append(step)

        def should_stop(self):
            return False

        def checkpoint_dir(self, step):
            import tempfile
            from pathlib import Path

            return Path(tempfile.mkdtemp(prefix="drill-helper-"))

        def save_checkpoint(self, step, directory, metrics=None):
            import shutil

            shutil.rmtree(directory)

    sink = Sink()
    train(SyntheticConfig(steps=53, keys=3, samples_every=5, evaluate_every=25), sink)
    points, samples, evals = synthetic_expected(53, key_names(3), 5, 25)
    assert sorted(sink.points) == sorted(points)
    assert sorted(sink.samples) == sorted(samples)
    assert sink.evals == evals == [0, 25, 50]


def test_peak_watch_sees_a_process_grow():
    # the child allocates only when told, so the watch has seen it small first
    code = (
        "import sys, time; sys.stdin.readline(); b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
        "print('ok', flush=True); time.sleep(30)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with PeakWatch(lambda: {child.pid: "child"}, interval=0.01) as watch:
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
        label, grew_mb = watch.worst()
        assert label == "child" and grew_mb > 150
    finally:
        child.kill()
        child.wait()


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x/y |"
