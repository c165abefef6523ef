"""Does conditioning work? A small classifier's verdict on samples asked for each class.

Trains a tiny CNN on the dataset's own training images (seeded; cached as safetensors so that
several runs share it), then samples ``--per-class`` images of every class from a
class-conditional run at each guidance scale and reports, per class, how often the classifier
agrees with the class asked for. At w = 0 the class is ignored, so agreement should sit near
chance (1 / classes); at the default guidance it should be high. Optionally writes a guidance
sweep for one class (one row per scale, the same seeds in every row). Prints JSON.

    .venv/bin/python bench/class_agreement.py RUN [--data builtin:mnist] [--guidance 0 1 2 4]
        [--per-class 100] [--classifier PATH] [--sweep-class NAME --sweep-out PNG] [--threads 1]
        [--sweep-guidance 0 1 2 4]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bench.common import machine
from core.checkpoint import read_training_state
from core.data import load_dataset
from core.exports import save_grid
from core.runs import RunDir
from core.sampling import SamplingModel

HELD_OUT = 500  # training images kept back to measure the classifier itself


class TinyCNN(nn.Sequential):
    """Two conv layers and two linear ones: ~98 % on MNIST after a minute of CPU."""

    def __init__(self, channels: int, size: int, classes: int) -> None:
        super().__init__(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, classes),
        )


def train_classifier(data: str, channels: int, size: int, epochs: int, seed: int) -> tuple[TinyCNN, float, list[str]]:
    """The classifier, its accuracy on held-out training images, and the class names."""
    dataset = load_dataset(data, channels, size)
    torch.manual_seed(seed)
    order = torch.randperm(len(dataset))
    test, train = order[:HELD_OUT], order[HELD_OUT:]
    net = TinyCNN(channels, size, len(dataset.class_names))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train))].split(64):
            loss = F.cross_entropy(net(dataset.batch(idx)), dataset.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(dataset.batch(test)).argmax(1) == dataset.labels[test]).float().mean().item()
    return net, accuracy, list(dataset.class_names)


def classifier(args: argparse.Namespace, channels: int, size: int) -> tuple[TinyCNN, dict]:
    """Load the cached classifier for this dataset, or train and cache it."""
    if args.classifier and Path(args.classifier).exists():
        info = json.loads(Path(args.classifier).with_suffix(".json").read_text())
        net = TinyCNN(channels, size, len(info["class_names"]))
        net.load_state_dict(load_file(args.classifier))
        return net.eval(), info
    start = time.perf_counter()
    net, accuracy, names = train_classifier(args.data, channels, size, args.epochs, args.seed)
    info = {"data": args.data, "held_out_accuracy": round(accuracy, 4), "class_names": names,
            "epochs": args.epochs, "train_s": round(time.perf_counter() - start, 1)}
    if args.classifier:
        save_file(net.state_dict(), args.classifier)
        Path(args.classifier).with_suffix(".json").write_text(json.dumps(info, indent=1))
    return net, info


def draw(model: SamplingModel, labels: torch.Tensor, guidance: float, args: argparse.Namespace) -> torch.Tensor:
    """Samples for ``labels`` in chunks (seed + chunk index), as ``ddpm sample`` would draw them."""
    return torch.cat([
        model.images(num_images=len(chunk), sampler=args.sampler, steps=args.steps, seed=args.seed + i,
                     labels=chunk, guidance=guidance)
        for i, chunk in enumerate(labels.split(args.chunk))
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a class-conditional run folder")
    p.add_argument("--data", default="builtin:mnist", help="the training images the classifier learns")
    p.add_argument("--classifier", help="cache file (.safetensors) for the classifier")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--sampler", default="dpm++")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--chunk", type=int, default=250, help="images per sampling call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--sweep-class", help="also write a guidance sweep for this class")
    p.add_argument("--sweep-out", type=Path)
    p.add_argument("--sweep-num", type=int, default=10, help="images per sweep row")
    p.add_argument("--sweep-guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SamplingModel.load(args.run, device="cpu")
    channels, size = model.image_shape[:2]
    net, info = classifier(args, channels, size)
    names = model.class_names
    if info["class_names"] != names:
        raise SystemExit(f"the classifier's classes {info['class_names']} are not the run's {names}")
    checkpoint = RunDir(args.run).latest_checkpoint()
    result = {"run": str(args.run), "step": read_training_state(checkpoint).step if checkpoint else None,
              "classifier": info, "sampler": args.sampler, "steps": args.steps, "per_class": args.per_class,
              "chance": round(1 / len(names), 4), "machine_start": machine(torch.device("cpu")),
              "agreement": {}}
    if args.sweep_class:
        c = names.index(args.sweep_class)
        rows = [draw(model, torch.full((args.sweep_num,), c), w, args) for w in args.sweep_guidance]
        save_grid(torch.cat(rows), args.sweep_out, nrow=args.sweep_num,
                  row_labels=[f"w = {w:g}" for w in args.sweep_guidance])
    labels = torch.arange(len(names)).repeat_interleave(args.per_class)
    for w in args.guidance:
        start = time.perf_counter()
        images = draw(model, labels, w, args)
        with torch.no_grad():
            agree = (net(images).argmax(1) == labels).float().view(len(names), -1).mean(1)
        result["agreement"][f"{w:g}"] = {
            "per_class": {n: round(a, 3) for n, a in zip(names, agree.tolist())},
            "mean": round(agree.mean().item(), 4), "min": round(agree.min().item(), 3),
            "sample_s": round(time.perf_counter() - start, 1),
        }
        print(json.dumps({"guidance": w, **result["agreement"][f"{w:g}"]}), file=sys.stderr, flush=True)
    result["machine_end"] = machine(torch.device("cpu"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
