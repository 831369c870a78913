"""``python -m trainers.reward`` as a subprocess: JSON lines on stdout (and nothing else there),
checkpoints in --workdir, and exit status 2 with field-naming messages on bad input (config, dataset
rows, --resume). Resuming itself is tested in-process (test_reward_train.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.common.demo_data import write_demo_datasets
from trainers.common.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainers.reward", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = build_tiny_model(root / "model", seed=0, hidden=32, layers=1, heads=2)
    train, held_out = write_demo_datasets(root / "data", n_train=48, n_eval=14)
    return root, model, train, held_out


def write_config(path: Path, model: Path, train: Path, held_out: Path, **extra) -> Path:
    lines = [f"model_path: {model}", f"train_dataset: {train}", f"eval_dataset: {held_out}", "lr: 1.0e-3",
             "batch_size: 8", "max_steps: 3", "max_length: 96", "threads: 1", "checkpoint_every: 2"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_run_prints_json_lines_and_checkpoints(files, tmp_path):
    root, model, train, held_out = files
    cfg = write_config(tmp_path / "rm.yaml", model, train, held_out)
    out = cli("--config", str(cfg), "--workdir", str(tmp_path / "work"))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]  # every stdout line is JSON
    steps = [r["step"] for r in rows]
    assert set(steps) == {0, 1, 2, 3}
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(isinstance(r["train/loss"], float) and r["train/loss"] > 0 for r in train_rows)
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 3] and "eval/overall" in evals[-1]  # all four sections present
    assert "done:" in out.stderr
    checkpoints = sorted(p.name for p in (tmp_path / "work").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-00000002", "checkpoint-00000003"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("lr: -1\ntrain_dataset: x.jsonl\n", "lr: Input should be greater than 0"),
        ("train_dataset: x.jsonl\nlearning_rate: 0.1\n", "learning_rate: Extra inputs are not permitted"),
        ("lr: 0.1\n", "train_dataset: Field required"),
        ("train_dataset: [1, 2\n", "cannot parse config file"),
        ("- a list\n", "must hold a mapping"),
        ("train_dataset: /nonexistent/pairs.jsonl\n", "train_dataset: no such file"),
        (
            "train_dataset: {train}\nmodel_path: /nonexistent/model\n",
            "model_path: /nonexistent/model is not a local",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_field(files, tmp_path, body, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(body.format(train=files[2]))
    out = cli("--config", str(cfg))
    assert out.returncode == 2
    assert out.stdout == ""
    assert message in out.stderr


def test_a_bad_row_in_the_dataset_exits_2(files, tmp_path):
    root, model, train, held_out = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    cfg = write_config(tmp_path / "rm.yaml", model, bad, held_out)
    out = cli("--config", str(cfg), "--workdir", str(tmp_path / "w"))
    assert out.returncode == 2 and out.stdout == ""
    assert "bad.jsonl:1: 'rejected' must be a string or a list of messages" in out.stderr


def test_resume_from_a_folder_that_is_no_checkpoint_exits_2(files, tmp_path):
    root, model, train, held_out = files
    cfg = write_config(tmp_path / "rm.yaml", model, train, held_out)
    out = cli("--config", str(cfg), "--resume", str(tmp_path))
    assert out.returncode == 2 and out.stdout == ""
    assert "not a reward-model checkpoint folder (no trainer_state.json)" in out.stderr
