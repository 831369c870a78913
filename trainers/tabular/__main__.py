"""Command line: ``python -m trainers.tabular --config cfg.json [--workdir DIR] [--resume CHECKPOINT_DIR]``.

Prints one JSON object per iteration to stdout, ``{"step": k, "gap": ..., ...}``, from k = 0 (k + 1
onwards with --resume). The config is JSON or YAML (by extension, else by content). A config that does
not validate prints ``field.path: message`` lines on stderr and exits with status 2, printing nothing
on stdout; so does an unreadable file. Checkpoints go to --workdir (default: a fresh temporary folder,
named on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainers.cli import BadInput, main


def check_resume(config, resume: Path | None) -> None:
    if resume is not None and not (resume / "state.json").is_file():
        raise BadInput(f"--resume {resume}: not a checkpoint folder (no state.json)")


if __name__ == "__main__":
    sys.exit(main("tabular", sys.argv[1:], check=check_resume))
