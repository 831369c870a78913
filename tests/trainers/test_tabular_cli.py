"""``python -m trainers.tabular`` as a subprocess: JSON lines on stdout, YAML configs, exit status 2
with field-naming messages on bad input, and --resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NPG = {
    "method": "softmax_npg",
    "step_size": 1.0,
    "iterations": 30,
    "mdp": {"kind": "garnet", "states": 10, "actions": 3, "branching": 3, "seed": 0, "gamma": 0.9},
}

TWO_STATE_YAML = """\
method: projected_pg
step_size: 1.0
iterations: 20
mdp:               # explicit: no kind, P present
  P:
    - [[1, 0], [0, 1]]
    - [[0, 1], [1, 0]]
  r: [[0.4, 0.0], [1.0, 0.0]]
  gamma: 0.9
  rho: [0.5, 0.5]
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainers.tabular", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_npg_prints_one_json_line_per_step_with_a_decreasing_gap(tmp_path):
    path = tmp_path / "npg.json"
    path.write_text(json.dumps(NPG))
    result = cli("--config", str(path), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    lines = rows(result.stdout)
    assert [row["step"] for row in lines] == list(range(31))
    gaps = [row["gap"] for row in lines]
    assert all(b <= a + 1e-12 for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < 1e-3 * gaps[0]
    assert {"value", "gap_inf", "entropy", "dist_to_opt", "step_size"} <= set(lines[0])
    assert (tmp_path / "work" / "checkpoint-00000030" / "params.safetensors").is_file()


def test_explicit_mdp_from_yaml(tmp_path):
    path = tmp_path / "two_state.yaml"
    path.write_text(TWO_STATE_YAML)
    result = cli("--config", str(path), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    lines = rows(result.stdout)
    assert [row["step"] for row in lines] == list(range(21))
    assert lines[-1]["gap"] <= 1e-12 and lines[-1]["dist_to_opt"] == 0.0


def test_yaml_is_detected_by_content_without_an_extension(tmp_path):
    path = tmp_path / "config"
    path.write_text(TWO_STATE_YAML)
    result = cli("--config", str(path), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 21


def test_bad_config_exits_2_naming_the_fields(tmp_path):
    bad = {**NPG, "method": "vanilla", "mdp": {**NPG["mdp"], "gamma": 1.0}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = cli("--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "mdp.gamma: Input should be less than 1" in result.stderr
    assert "method:" in result.stderr


def test_unreadable_or_unparseable_config_exits_2(tmp_path):
    missing = cli("--config", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and missing.stdout == "" and "cannot read config file" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"method": ')
    parsed = cli("--config", str(broken))
    assert parsed.returncode == 2 and parsed.stdout == "" and "cannot parse config file" in parsed.stderr
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    shape = cli("--config", str(listed))
    assert shape.returncode == 2 and "must hold a mapping" in shape.stderr


def test_resume_continues_after_the_checkpoint_with_identical_lines(tmp_path):
    path = tmp_path / "npg.json"
    path.write_text(json.dumps({**NPG, "checkpoint_every": 10}))
    full = rows(cli("--config", str(path), "--workdir", str(tmp_path / "full")).stdout)
    resumed = cli(
        "--config",
        str(path),
        "--workdir",
        str(tmp_path / "more"),
        "--resume",
        str(tmp_path / "full" / "checkpoint-00000020"),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert rows(resumed.stdout) == full[21:]
    bad = cli("--config", str(path), "--resume", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "not a checkpoint folder" in bad.stderr
