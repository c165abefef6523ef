#!/usr/bin/env bash
# One short GPU pass for the device machine: the tests that need CUDA, the training and sampling
# benchmarks (with the fast path's CUDA graphs undone, to show what they bring), then a tiny
# train + sample through the CLI. JSON, the logs and the grid land in $OUT (default: ./gpu-check).
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 DDPM_STUDIO_CACHE_DIR=${DDPM_STUDIO_CACHE_DIR:-$(mktemp -d)}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tail -3
python3 bench/train_step.py --device cuda --repeats 20 --paths naive,fast,fast-cuda_graphs \
    >"$out/train_step.json" || echo "train_step failed"
python3 bench/sample_step.py --device cuda --repeats 10 >"$out/sample_step.json" || echo "sample_step failed"
run=$(mktemp -d)
python3 -m core.cli train preset:fast-cpu --max-steps 40 --device cuda --run-dir "$run/r" >"$out/train.log" 2>&1
tail -c 400 "$out/train.log"; echo
head -1 "$run/r/log.jsonl" | python3 -c "import json,sys; print(json.load(sys.stdin).get('autotune', {}).get('setup'))"
python3 -m core.cli sample "$run/r" --device cuda --sampler dpm++ --steps 20 --num 16 --grid "$out/grid.png" 2>&1 | tail -1
