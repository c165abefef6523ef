"""FID of training-recipe variants at equal steps, and of samplers on one trained model.

The ablation trains each variant of a preset (one change at a time, see :data:`VARIANTS`) for
the same number of steps with ``ddpm train``, samples ``--n`` images of its EMA weights with
``ddpm sample`` and scores them with ``fid.py`` (Inception pool3, N on both sides) against the
real images. Equal steps, not equal minutes: on a shared machine wall-clock is noise, and these
options do not change the cost of a step (each row reports its median step time so that options
that do can be converted with the measured ratio). Runs are subprocesses of the app's own CLI,
so a row is exactly what a user's run would give.

    .venv/bin/python bench/quality.py ablation OUT --steps 3600 [--variants base,cosine] \\
        [--data builtin:mnist --real ../shared/data/mnist-5k/mnist5k-images-idx3-ubyte.gz]
    .venv/bin/python bench/quality.py samplers OUT RUN [--steps-list 10,20,50] [--samplers ddim,dpm++]

Prints one JSON object per row (and writes them to OUT/results.jsonl): variant or sampler, steps,
FID, median training step time, and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FID_TOOL = ROOT.parent / "shared" / "tools" / "fid.py"
MNIST_REAL = ROOT.parent / "shared" / "data" / "mnist-5k" / "mnist5k-images-idx3-ubyte.gz"

COSINE = {"lr_schedule": "cosine", "warmup_steps": 100}
EMA_HALFLIFE = {"ema_halflife_kimg": 10.0, "ema_rampup": 0.05}
MIN_SNR = {"loss_weighting": "min_snr", "min_snr_gamma": 5.0}

#: One change at a time from the preset, then the changes together.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {},
    "cosine": {"train_params": COSINE},
    "ema_halflife": {"train_params": EMA_HALFLIFE},
    "min_snr": {"train_params": MIN_SNR},
    "v": {"diffusion_params": {"prediction": "v"}},
    "combined": {"train_params": COSINE | EMA_HALFLIFE | MIN_SNR},
    "combined_v": {"train_params": COSINE | EMA_HALFLIFE | MIN_SNR, "diffusion_params": {"prediction": "v"}},
    # half the batch: twice the steps in the same minutes (run it with twice --steps)
    "batch32": {"train_params": {"batch_size": 32}},
    "batch32_combined_v": {"train_params": {"batch_size": 32} | COSINE | EMA_HALFLIFE | MIN_SNR,
                           "diffusion_params": {"prediction": "v"}},
}


def _env(threads: int) -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": str(threads)}


def _ddpm(*args: str, threads: int) -> None:
    subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=_env(threads), check=True,
                   stdout=subprocess.DEVNULL)


def fid(images: Path, real: Path, n: int, threads: int) -> float:
    out = subprocess.run([sys.executable, str(FID_TOOL), str(images), str(real), "--n", str(n)],
                         env=_env(threads), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["fid"]


def _median_step_s(run: Path) -> float | None:
    """Median wall time between consecutive logged steps (checkpoint steps included)."""
    times = [json.loads(line)["time"] for line in (run / "log.jsonl").read_text().splitlines() if line]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if gaps else None


def _config(preset: str, overrides: dict[str, dict[str, Any]], name: str, steps: int) -> dict:
    from core.presets import load_preset

    data = load_preset(preset).to_dict()
    for section, values in overrides.items():
        data[section].update(values)
    data["train_params"].update(task_name=name, max_steps=steps, sample_every_steps=None,
                                checkpoint_every_steps=max(steps // 4, 1))
    return data


def _emit(row: dict, out: Path) -> None:
    row["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    line = json.dumps(row)
    print(line, flush=True)
    with open(out / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def ablation(args: argparse.Namespace) -> None:
    for name in args.variants.split(","):
        run = args.out / name
        config = args.out / f"{name}.yaml"
        config.write_text(yaml.safe_dump(_config(args.preset, VARIANTS[name], name, args.steps), sort_keys=False))
        load_before = [round(v, 2) for v in os.getloadavg()]
        _ddpm("train", str(config), "--run-dir", str(run), "--data", args.data, threads=args.threads)
        images = run / f"samples-{args.sampler}-{args.sample_steps}"
        _ddpm("sample", str(run), "--sampler", args.sampler, "--steps", str(args.sample_steps),
              "--num", str(args.n), "--images", str(images), threads=args.threads)
        _emit({"variant": name, "steps": args.steps, "fid": fid(images, args.real, args.n, args.threads),
               "n": args.n, "sampler": f"{args.sampler} {args.sample_steps}", "step_s": _median_step_s(run),
               "loadavg_before": load_before}, args.out)


def samplers(args: argparse.Namespace) -> None:
    grid = [(s, int(n)) for s in args.samplers.split(",") for n in args.steps_list.split(",")]
    grid += [("ddpm", 1000)] if args.ddpm else []
    for sampler, steps in grid:
        images = args.out / f"{sampler}-{steps}"
        _ddpm("sample", str(args.run), "--sampler", sampler, "--steps", str(steps), "--num", str(args.n),
              "--images", str(images), threads=args.threads)
        _emit({"sampler": sampler, "steps": steps, "fid": fid(images, args.real, args.n, args.threads),
               "n": args.n, "run": str(args.run)}, args.out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("ablation", "samplers"):
        s = sub.add_parser(name)
        s.add_argument("out", type=Path)
        s.add_argument("--real", type=Path, default=MNIST_REAL, help="real images for FID (IDX .gz or folder)")
        s.add_argument("--n", type=int, default=1000, help="images on each side of the FID")
        s.add_argument("--threads", type=int, default=1, help="threads per subprocess (1: steady under load)")
    a = sub.choices["ablation"]
    a.add_argument("--preset", default="fast-cpu")
    a.add_argument("--variants", default=",".join(VARIANTS))
    a.add_argument("--steps", type=int, default=3600, help="training steps (3600: 10 idle minutes of fast-cpu)")
    a.add_argument("--data", default="builtin:mnist")
    a.add_argument("--sampler", default="dpm++")
    a.add_argument("--sample-steps", type=int, default=20)
    s = sub.choices["samplers"]
    s.add_argument("run", type=Path, help="run folder of a well-trained model")
    s.add_argument("--samplers", default="ddim,dpm++,dpm++3m,dpm++sde,unipc")
    s.add_argument("--steps-list", default="10,20,50")
    s.add_argument("--no-ddpm", dest="ddpm", action="store_false", help="skip the 1000-step DDPM row")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"ablation": ablation, "samplers": samplers}[args.mode](args)


if __name__ == "__main__":
    main()
