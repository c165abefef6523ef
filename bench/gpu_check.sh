#!/usr/bin/env bash
# One short GPU pass for the device machine: the three speed benchmarks, then a tiny
# train + sample through the CLI. JSON and the grid land in $OUT (default: ./gpu-check).
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 bench/train_step.py --device cuda --repeats 10 >"$out/train_step.json" || echo "train_step failed"
python3 bench/sample_step.py --device cuda --repeats 10 >"$out/sample_step.json" || echo "sample_step failed"
python3 bench/attention.py --device cuda --repeats 10 >"$out/attention.json" || echo "attention failed"
run=$(mktemp -d)
python3 -m core.cli train preset:fast-cpu --max-steps 40 --device cuda --run-dir "$run/r" 2>&1 | tail -2
python3 -m core.cli sample "$run/r" --device cuda --sampler dpm++ --steps 20 --num 16 --grid "$out/grid.png" 2>&1 | tail -1
