#!/usr/bin/env python3
"""Run the property-based fuzz suite (tests/test_fuzz.py) longer than CI does.

    python scripts/fuzz.py [EXAMPLES]      # default 5000 examples per property
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys


def main(argv: list[str]) -> int:
    examples = argv[1] if len(argv) > 1 else "5000"
    repo = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, MCPSYNC_FUZZ_EXAMPLES=examples)
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-o", "timeout=3600", "tests/test_fuzz.py"], cwd=repo, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
