"""python -m trainers.regression --config cfg.json [--workdir DIR] [--resume CHECKPOINT]: JSON lines
on stdout."""

import sys

from trainers.cli import main

if __name__ == "__main__":
    sys.exit(main("regression", sys.argv[1:]))
