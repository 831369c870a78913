"""`python -m bench.gpu_smoke --cpu-small`: the GPU smoke's whole sequence on the CPU with a tiny model
(issue 10, point 13). The GPU run itself cannot happen here; this checks the script end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_small_smoke_runs_every_part(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_smoke", "--cpu-small", "--no-trl", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert report["ok"] and report["environment"]["device"] == "cpu"
    assert report["shape"]["name"] == "cpu-small"
    assert set(parts) == {"build", "rl", "resume", "eval", "dapo", "reward", "trl"}
    assert all(p["ok"] for p in parts.values())

    rl = parts["rl"]
    assert rl["engine"] == "torch" and rl["steps"] == [1, 2, 3]
    assert all(x > 0 for x in rl["rollout_tokens_per_s"] + rl["update_tokens_per_s"])
    # a random model rarely stops: the rollouts are (nearly) the full length
    assert max(rl["response_length_mean"]) > report["shape"]["new_tokens"] / 2
    assert rl["peak_gib"] is None and rl["estimate"] is None  # GPU numbers: none on the CPU
    assert Path(rl["checkpoint"]).name.endswith("3")

    assert parts["resume"]["trained_steps"] == [4]
    assert len(parts["dapo"]["actor_steps"]) == 2
    assert parts["reward"]["steps"] == 20
    assert set(parts["eval"]["metrics"]) >= {"avg@2", "pass@1", "pass@2"}
    assert parts["trl"]["skipped"]
    # the side-by-side table is printed
    assert "rollout tokens/s (generated)" in proc.stdout and "TRL GRPOTrainer" in proc.stdout
