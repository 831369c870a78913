"""Command line: ``python -m trainers.tabular --config cfg.json [--workdir DIR] [--resume CHECKPOINT_DIR]``.

Prints one JSON object per iteration to stdout, ``{"step": k, "gap": ..., ...}``, from k = 0 (k + 1
onwards with --resume). The config is JSON or YAML (by extension, else by content). A config that does
not validate prints ``field.path: message`` lines on stderr and exits with status 2, printing nothing
on stdout; so does an unreadable file. Checkpoints go to --workdir (default: a fresh temporary folder,
named on stderr).
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
from trainers.tabular.config import TabularConfig, format_errors

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.tabular", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="config file (JSON or YAML)")
    parser.add_argument("--workdir", type=Path, help="folder for checkpoints (default: a temporary folder)")
    parser.add_argument("--resume", type=Path, help="checkpoint folder to continue from")
    args = parser.parse_args(argv)
    try:
        raw = read_config(args.config)
        try:
            config = TabularConfig.model_validate(raw)
        except ValidationError as exc:
            raise BadInput(
                "invalid config:\n" + "\n".join("  " + line for line in format_errors(exc))
            ) from None
        if args.resume is not None and not (args.resume / "state.json").is_file():
            raise BadInput(f"--resume {args.resume}: not a checkpoint folder (no state.json)")
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    workdir = args.workdir
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="orlab-tabular-"))
        print(f"checkpoints in {workdir}", file=sys.stderr)

    from trainers.tabular.train import train  # numpy only once the config is known to be good

    sink = JsonlSink(stream=sys.stdout, workdir=workdir, resume_from=args.resume)
    try:
        summary = train(config, sink)
    except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wanted
        sys.stderr.close()
        return 0
    print(f"done: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
