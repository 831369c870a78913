"""python -m trainers.dapo --config cfg.yaml [--workdir DIR] [--resume CHECKPOINT]: JSON lines on stdout."""

import sys

from trainers.cli import main

if __name__ == "__main__":
    sys.exit(main("dapo", sys.argv[1:]))
