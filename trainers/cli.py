"""The trainers' one command line: ``python -m trainers.<kind> --config cfg.yaml [--workdir DIR]
[--resume CHECKPOINT_DIR]``.

Prints one JSON object per logged step on stdout (JsonlSink); everything else (library output,
progress bars, the final summary) goes to stderr, so stdout stays JSON lines. The config is JSON or
YAML (by extension, else by content). Bad input (an unreadable or unparsable file, a config that does
not validate: one ``field.path: message`` line per error, or whatever a trainer's ``check`` rejects)
prints ``error: ...`` on stderr and exits with status 2, printing nothing on stdout. Checkpoints go
to --workdir (default: a fresh temporary folder, named on stderr)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainers.base import JsonlSink, TrainerConfig, format_errors, get_spec

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


def main(
    kind: str,
    argv: list[str] | None = None,
    *,
    check: Callable[[TrainerConfig, Path | None], None] | None = None,
    input_errors: tuple[type[Exception], ...] = (),
) -> int:
    """``check(config, resume)`` raises BadInput for what a trainer can see wrong before it starts
    (missing files, a foreign checkpoint); ``input_errors`` raised during training are bad input too."""
    spec = get_spec(kind)
    parser = argparse.ArgumentParser(prog=f"python -m trainers.{kind}", description=spec.title)
    parser.add_argument("--config", required=True, type=Path, help="config file (JSON or YAML)")
    parser.add_argument("--workdir", type=Path, help="folder for checkpoints (default: a temporary folder)")
    parser.add_argument("--resume", type=Path, help="checkpoint folder to continue from")
    args = parser.parse_args(argv)
    try:
        raw = read_config(args.config)
        try:
            config = spec.validate(raw)
        except ValidationError as exc:
            raise BadInput(
                "invalid config:\n" + "\n".join("  " + line for line in format_errors(exc))
            ) from None
        if check is not None:
            check(config, args.resume)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    workdir = args.workdir
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"orlab-{kind}-"))
        print(f"checkpoints in {workdir}", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)

    # Libraries print to stdout (DeepSpeed's logger, for one); only our JSON lines may go there.
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        sink = JsonlSink(stream=stdout, workdir=workdir, resume_from=args.resume)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: rank 0 prints, all train
            from trainers.common import distributed

            sink = distributed.launched_sink(sink)
        try:
            summary = spec.train_fn()(config, sink)  # torch etc. only once the config is known good
        except input_errors as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wanted
            sys.stderr.close()
            return 0
    finally:
        sys.stdout = stdout
    print(f"done: {json.dumps(summary, default=str)}", file=sys.stderr)
    return 0
