"""Run by tests under `accelerate launch`: `hololm` with this script's arguments, in each
process, exiting with the command line's status."""

from __future__ import annotations

import sys

from hololm.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
