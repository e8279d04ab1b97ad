"""Run talkies as an external server for the process-engine tests (`python upstream_talkies.py serve`).

The script's own path in the command line is how the tests find their children in the process table."""

from __future__ import annotations

import sys

from talkies.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
