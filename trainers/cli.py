"""Shared command line of the trainers: ``python -m trainers.<kind> --config cfg.yaml``.

Prints one JSON object per step on stdout (JsonlSink). A config that does not validate prints
``field.path: message`` lines on stderr and exits with status 2, printing nothing on stdout; so does
an unreadable file. Checkpoints go to --workdir (default: a fresh temporary folder, named on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from pydantic import ValidationError

from trainers.base import JsonlSink, get_spec


def _read(path: Path) -> dict:
    text = path.read_text()
    raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a mapping of fields")
    return raw


def main(kind: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m trainers.{kind}")
    parser.add_argument("--config", required=True, type=Path, help="config file (JSON or YAML)")
    parser.add_argument("--workdir", type=Path, help="folder for checkpoints (default: a temporary folder)")
    parser.add_argument("--resume", type=Path, help="checkpoint folder to continue from")
    args = parser.parse_args(argv)
    spec = get_spec(kind)
    try:
        config = spec.validate(_read(args.config))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, ValidationError):
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "config"
                print(f"{loc}: {err['msg']}", file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"orlab-{kind}-"))
    if args.workdir is None:
        print(f"checkpoints in {workdir}", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(stream=sys.stdout, workdir=workdir, resume_from=args.resume)
    summary = spec.train_fn()(config, sink)
    print(json.dumps({"summary": summary}, default=str), file=sys.stderr)
    return 0
