"""verl's validation generations, logged through its mlflow backend, become samples of the run.

verl (verl/utils/tracking.py, ValidationGenerationsLogger.log_generations_to_mlflow) writes one JSON
file per validation step, ``val_step{step}.json`` at the run's artifact root, holding
``[{"input": prompt, "output": completion, "score": reward}, ...]``, and uploads it with
``mlflow.log_artifact``. The upload is kept as an artifact like any other; when its name and shape
are verl's, its rows are also stored as samples (step = the validation step, phase "eval",
``extra.source`` = "verl validation"), idempotent per file row (client_key), so a re-upload adds
nothing. The rows of one prompt (verl's ``val_kwargs.n`` generations of it) form a group:
``group_index`` numbers the file's distinct prompts in order of appearance, ``member_index`` the
rows of each. verl's file carries no token counts, finish reasons or reward components: ``length``
counts characters, the others stay empty."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from webapp.runs.models import Run
from webapp.runs.services import samples_record

log = logging.getLogger(__name__)

VERL_FILE = re.compile(r"^val_step(-?\d{1,16})\.json$")
MAX_SAMPLES = 10_000
SOURCE = "verl validation"


def _text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\x00", "")


def samples_from_verl_file(data, step: int) -> list[dict] | None:
    """The samples of one verl validation file, or None when it is not verl's shape."""
    if not isinstance(data, list) or not data or len(data) > MAX_SAMPLES:
        return None
    if not all(isinstance(row, dict) and {"input", "output"} <= row.keys() for row in data):
        return None
    out = []
    groups: dict[str, list[int]] = {}  # prompt -> [group index, members so far]
    for i, row in enumerate(data):
        score = row.get("score")
        reward = None
        extra = {"source": SOURCE}
        if type(score) in (int, float) and math.isfinite(score):
            reward = float(score)
        elif score is not None:  # NaN (Python's json writes it), a string, a list...: kept as text
            extra["score"] = _text(score) if not isinstance(score, float) else str(score)
        completion = _text(row["output"])
        prompt = _text(row["input"])
        group = groups.setdefault(prompt, [len(groups), 0])
        group[1] += 1
        out.append(
            {
                "step": step,
                "prompt": prompt,
                "completion": completion,
                "reward": reward,
                "length": len(completion),
                "phase": "eval",
                "group_index": group[0],
                "member_index": group[1] - 1,
                "extra": extra,
                "client_key": f"verl-val:{step}:{i}",
            }
        )
    return out


def maybe_samples_from_artifact(run: Run, rel: str, target: Path) -> int:
    """Called after an artifact upload; returns the number of samples added (0 for other files)."""
    m = VERL_FILE.match(rel)
    if not m:
        return 0
    step = int(m.group(1))
    try:
        data = json.loads(target.read_bytes())  # json, not orjson: verl's json.dump writes NaN
    except (OSError, ValueError):
        return 0
    samples = samples_from_verl_file(data, step)
    if samples is None:
        return 0
    try:
        return samples_record(run, samples)
    except Exception:  # the artifact is stored whatever happens here
        log.exception("verl validation file %s of run %s: samples not stored", rel, run.pk)
        return 0
