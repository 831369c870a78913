"""Command line: ``python -m trainers.reward --config cfg.yaml [--workdir DIR] [--resume CHECKPOINT_DIR]``.

Prints one JSON object per logged step to stdout, ``{"step": k, "train/loss": ..., ...}`` (step 0
holds the data summary and the first evaluation); everything else (library warnings, progress bars,
the final summary) goes to stderr, so stdout stays JSON lines. The config is JSON or YAML (by
extension, else by content); ``train_dataset`` / ``eval_dataset`` are paths of JSONL files in the
platform's export format (``python -m trainers.reward.demo_data OUT`` writes a demo pair). A config
that does not validate prints ``field.path: message`` lines on stderr and exits with status 2,
printing nothing on stdout; so does an unreadable file or a missing dataset. Checkpoints go to
--workdir (default: a fresh temporary folder, named on stderr).

Example::

    python -m trainers.reward.demo_data /tmp/rm-data
    printf 'model_path: tiny\\nlr: 1.0e-3\\nbatch_size: 16\\nthreads: 1\\n' > rm.yaml
    printf 'train_dataset: /tmp/rm-data/train.jsonl\\neval_dataset: /tmp/rm-data/eval.jsonl\\n' >> rm.yaml
    python -m trainers.reward --config rm.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainers.base import JsonlSink
from trainers.common.data import DataError, read_preference_jsonl
from trainers.reward.config import RewardConfig, format_errors

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A problem with the user's files or arguments: reported on stderr, exit status 2."""


def read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read config file {path}: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            raw = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:  # JSON is YAML, but JSON's error messages are better for JSON-looking files
            raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"config file {path} must hold a mapping of fields, got {type(raw).__name__}")
    return raw


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
    if config.model_path != "tiny" and not (Path(config.model_path).expanduser() / "config.json").is_file():
        raise BadInput(f"model_path: {config.model_path} is not a local Hugging Face model directory")
    if resume is not None and not (resume / "trainer_state.json").is_file():
        raise BadInput(f"--resume {resume}: not a reward-model checkpoint folder (no trainer_state.json)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.reward", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="config file (JSON or YAML)")
    parser.add_argument("--workdir", type=Path, help="folder for checkpoints (default: a temporary folder)")
    parser.add_argument("--resume", type=Path, help="checkpoint folder to continue from")
    args = parser.parse_args(argv)
    try:
        raw = read_config(args.config)
        try:
            config = RewardConfig.model_validate(raw)
        except ValidationError as exc:
            raise BadInput(
                "invalid config:\n" + "\n".join("  " + line for line in format_errors(exc))
            ) from None
        check_files(config, args.resume)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    workdir = args.workdir
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="orlab-reward-"))
        print(f"checkpoints in {workdir}", file=sys.stderr)

    # Libraries print to stdout (DeepSpeed's logger, for one); only our JSON lines may go there.
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        from trainers.reward.train import train  # torch only once the config is known to be good

        sink = JsonlSink(stream=stdout, workdir=workdir, resume_from=args.resume)
        try:
            summary = train(config, sink)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wanted
            sys.stderr.close()
            return 0
    finally:
        sys.stdout = stdout
    print(f"done: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
