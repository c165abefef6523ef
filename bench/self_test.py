"""How long the app's ``--self-test`` takes end to end, in a fresh process as a user runs it.

    .venv/bin/python bench/self_test.py [--device cpu]

Prints the self-test's own JSON verdict plus ``wall_s`` (process start to exit) and ``ok``:
the verdict passed within the goal of one minute.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ddpm_gui", "--self-test", "--device", args.device],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    verdict.update(wall_s=round(wall, 2), goal_s=GOAL_S, ok=bool(verdict.get("ok")) and wall <= GOAL_S)
    print(json.dumps(verdict))


if __name__ == "__main__":
    main()
