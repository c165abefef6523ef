"""Page faults of late CPU training steps with glibc's default allocator settings and with
:func:`core.allocator.keep_freed_memory`: the figure that justifies tuning the allocator.

    .venv/bin/python bench/allocator_faults.py [--batch 64] [--steps 8]

Each mode runs in a fresh subprocess (the settings are per process): the fast-cpu preset, the
steps' minor faults summed over the second half. Measured on 2 Zen 4 cores at batch 64: 45,000-
120,000 faults in four steps by glibc's defaults, 0-800 tuned. Prints JSON; ``ok`` is the goal
(defaults above 20,000, tuned below 4,000).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import resource, sys, tempfile, torch
import core.allocator
from core.presets import load_preset
from core.trainer import Trainer

batch, steps = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
config = load_preset("fast-cpu").replace("train_params", batch_size=batch)
if sys.argv[1] == "tuned":
    core.allocator.keep_freed_memory()
trainer = Trainer(config, tempfile.mkdtemp())
m = config.model_params
images = torch.rand(batch, m.im_channels, m.im_size, m.im_size) * 2 - 1
faults = []
for _ in range(steps):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    trainer._train_step(trainer.model, images)
    trainer.step += 1
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(sum(faults[steps // 2:]))
"""


def late_step_faults(mode: str, batch: int, steps: int) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(batch), str(steps)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    default, tuned = (late_step_faults(mode, args.batch, args.steps) for mode in ("default", "tuned"))
    print(json.dumps({"faults_default": default, "faults_tuned": tuned, "batch": args.batch,
                      "steps_counted": args.steps - args.steps // 2,
                      "ok": default > 20_000 and tuned < 4_000}))


if __name__ == "__main__":
    main()
