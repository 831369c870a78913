"""Command line: ``python -m trainers.reward --config cfg.yaml [--workdir DIR] [--resume CHECKPOINT_DIR]``.

Prints one JSON object per logged step to stdout, ``{"step": k, "train/loss": ..., ...}`` (step 0
holds the data summary and the first evaluation); everything else (library warnings, progress bars,
the final summary) goes to stderr, so stdout stays JSON lines. The config is JSON or YAML (by
extension, else by content); ``train_dataset`` / ``eval_dataset`` are paths of JSONL files in the
platform's export format (``python -m trainers.common.demo_data OUT`` writes a demo pair). A config
that does not validate prints ``field.path: message`` lines on stderr and exits with status 2,
printing nothing on stdout; so does an unreadable file or a missing dataset. Checkpoints go to
--workdir (default: a fresh temporary folder, named on stderr).

Example::

    python -m trainers.common.demo_data /tmp/rm-data
    printf 'model_path: tiny\\nlr: 1.0e-3\\nbatch_size: 16\\nthreads: 1\\n' > rm.yaml
    printf 'train_dataset: /tmp/rm-data/train.jsonl\\neval_dataset: /tmp/rm-data/eval.jsonl\\n' >> rm.yaml
    python -m trainers.reward --config rm.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainers.cli import BadInput, main
from trainers.common.data import DataError, read_preference_jsonl
from trainers.common.model_roots import model_directory
from trainers.reward.config import RewardConfig


def check_files(config: RewardConfig, resume: Path | None) -> None:
    for name in ("train_dataset", "eval_dataset"):
        ref = getattr(config, name)
        if ref is None:
            continue
        if isinstance(ref, int):
            raise BadInput(f"{name}: {ref} is a dataset id; standalone runs take the path of a JSONL file")
        if not Path(ref).is_file():
            raise BadInput(f"{name}: no such file {ref}")
        try:  # before torch is even imported: a bad row fails in a second, not after loading a model
            read_preference_jsonl(ref)
        except DataError as exc:
            raise BadInput(f"{name}: {exc}") from None
    if config.model_path != "tiny":
        local = Path(config.model_path).expanduser()
        if (local / "config.json").is_file():
            # the trainer reads a relative model_path as a catalogue name: hand it the directory
            config.model_path = str(local.resolve())
        else:
            try:
                found = model_directory(config.model_path)
            except ValueError as exc:
                raise BadInput(f"model_path: {exc}") from None
            if not (found / "config.json").is_file():
                raise BadInput(f"model_path: {config.model_path} is not a local Hugging Face model directory")
    if resume is not None and not (resume / "trainer_state.json").is_file():
        raise BadInput(f"--resume {resume}: not a reward-model checkpoint folder (no trainer_state.json)")


if __name__ == "__main__":
    sys.exit(main("reward", sys.argv[1:], check=check_files, input_errors=(DataError,)))
