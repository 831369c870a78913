"""python -m trainers.sft --config cfg.yaml [--workdir DIR]: one JSON object per step on stdout."""

import sys

from trainers.cli import main

if __name__ == "__main__":
    sys.exit(main("sft", sys.argv[1:]))
