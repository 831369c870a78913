"""``orlab-client import-tb`` against the real server (gunicorn on the test database): event files
written by tensorboard's own writer (torch's SummaryWriter style simple values, v2 tensor scalars,
text, a histogram to skip), one run per run directory, metrics and samples complete (no sampling),
requests in bounded batches, a progress bar, and a re-import that stores nothing twice while a log
directory that grew adds only what is new."""

from pathlib import Path

import pytest

from orlab_client import Client, tb_import
from orlab_client.cli import main as cli_main
from tests.client.test_client import server, token  # noqa: F401 (fixtures)
from webapp.runs.metric_store import series_read
from webapp.runs.models import MetricSeries, Run, Sample


def write_events(folder: Path, suffix: str, steps: range, *, text_every: int = 0, v2: bool = False) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.histogram.summary_v2 import histogram_pb
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder), filename_suffix=suffix)
    for step in steps:
        wall = 1_700_000_000.0 + step
        if v2:
            summary = scalar_pb("eval/acc", step / 1000)
        else:
            summary = summary_pb2.Summary(
                value=[
                    summary_pb2.Summary.Value(tag="train/loss", simple_value=1.0 / (step + 1)),
                    summary_pb2.Summary.Value(tag="train/reward", simple_value=step * 0.5),
                ]
            )
        writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=summary))
        if text_every and step % text_every == 0:
            text = text_pb("completions", f"step {step}: the answer is {step * 2}")
            writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=text))
            hist = histogram_pb("weights", [0.1, 0.2, 0.3])
            writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=hist))
    writer.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_import_tb_is_complete_bounded_and_idempotent(server, token, project, tmp_path, monkeypatch, capsys):  # noqa: F811
    logdir = tmp_path / "tb"
    write_events(logdir / "grpo-a", ".1", range(0, 600), text_every=50)
    write_events(logdir / "sweep" / "b", ".1", range(0, 200), v2=True)
    url = f"http://127.0.0.1:{server.port}"
    sizes: list[int] = []
    real_request = Client.request

    def spy(self, method, path, body=None, **kw):
        if path.endswith("/metrics/"):
            sizes.append(len(body))
        return real_request(self, method, path, body, **kw)

    monkeypatch.setattr(Client, "request", spy)
    monkeypatch.setattr(tb_import, "POINTS_PER_REQUEST", 500)
    args = ["--url", url, "--token", token, "import-tb", str(logdir), "--project", "alice-lab"]
    assert cli_main(args) == 0
    out = capsys.readouterr()
    assert "imported 2 runs: 1400 points, 12 samples" in out.out
    assert "import-tb" in out.err and "100%" in out.err  # tqdm's bar over the files' bytes
    assert "skipped: 12 histograms" in out.err
    assert max(sizes) <= 500 and sum(sizes) == 1400

    a = Run.objects.get(project=project, name="grpo-a")
    b = Run.objects.get(project=project, name="sweep/b")
    assert a.kind == b.kind == "external" and a.status == b.status == "succeeded"
    assert a.tags == ["tensorboard"] and a.config == {
        "tensorboard": {"source": str((logdir / "grpo-a").resolve())}
    }
    loss = series_read([a.id], ["train/loss"])[a.id]["train/loss"]
    assert loss["steps"].tolist() == list(range(600))
    assert loss["values"][9] == pytest.approx(0.1)
    acc = series_read([b.id], ["eval/acc"])[b.id]["eval/acc"]
    assert acc["steps"].tolist() == list(range(200)) and acc["values"][150] == pytest.approx(0.15)
    # the prompt is stored once per run (issue 14's RolloutPrompt) and read through prompt_ref
    texts = [  # model rows: the completion is compressed in the table and decoded on load (sample_text)
        (s.step, s.prompt_ref.text, s.completion)
        for s in Sample.objects.filter(run=a).select_related("prompt_ref").order_by("step")
    ]
    assert len(texts) == 12 and texts[3] == (150, "completions", "step 150: the answer is 300")

    # again: nothing new; then the run went on (a second event file): only the new steps arrive
    assert cli_main([*args, "--no-progress"]) == 0
    write_events(logdir / "grpo-a", ".2", range(600, 700), text_every=50)
    assert cli_main([*args, "--no-progress"]) == 0
    assert Run.objects.filter(project=project).count() == 2
    assert MetricSeries.objects.get(run=a, key="train/loss").count == 700
    assert MetricSeries.objects.get(run=b, key="eval/acc").count == 200
    assert Sample.objects.filter(run=a).count() == 14


def test_import_tb_refuses_a_folder_without_event_files(tmp_path, capsys):
    args = ["--url", "http://127.0.0.1:9", "--token", "t", "--spool-dir", str(tmp_path / "spool")]
    assert cli_main([*args, "import-tb", str(tmp_path), "--project", "7"]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
