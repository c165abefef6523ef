"""FID agreement with the shared reference tool, and the speed of the Inception feature pass.

Takes the same two image sets the reference tool (``shared/tools/fid.py``) takes, with its own
seeded subset rule, and computes FID with :mod:`core.inception` and :mod:`core.metrics` in the precision
the app picks ("auto"), fp32 or bf16. Per path it times the
feature pass batch by batch, the paths in alternation, so outside load hits them alike; with
``--tool`` the reference tool's own feature function (fp32, batch 50, its ``torch.no_grad``
model) is timed the same way as the "before" path, and its FID (its features, its scipy
``sqrtm``) is the figure to agree with; our maths on the tool's features is reported too.

    .venv/bin/python bench/fid_features.py A B [--n 1000] [--threads 2] [--tool ../shared/tools/fid.py]
        [--paths tool,auto]

A and B: folders of images, IDX ``.gz`` files or ``.npz`` (as the tool reads them). The tool
needs scipy (not a dependency of the app: put it on PYTHONPATH for this run). Prints JSON: per
path the seconds for the A set's features (and images/s), FID of A against B per path, the
tool's FID and the relative difference, and the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import emit, machine
from core import inception, metrics
from core.device import Precision


def _load_tool(path: str):
    spec = importlib.util.spec_from_file_location("reference_fid_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_tensor(images: np.ndarray) -> torch.Tensor:
    """The tool's (N, H, W[, C]) uint8 arrays as (N, C, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tool", default=str(Path(__file__).resolve().parents[2] / "shared" / "tools" / "fid.py"))
    p.add_argument("--paths", default="tool,auto", help="comma-separated: tool, fp32, bf16, auto (the app's choice)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    tool = _load_tool(args.tool)
    sets = {"a": tool.load_images(args.a, args.n), "b": tool.load_images(args.b, args.n)}
    device = torch.device("cpu")
    auto = inception.feature_precision(device)
    paths = args.paths.split(",")

    def ours(precision: Precision):
        return lambda imgs: inception.features(_as_tensor(imgs), device=device, precision=precision)

    tool_model = tool.load_inception() if "tool" in paths else None
    run = {"tool": lambda imgs: tool.features(tool_model, imgs), "fp32": ours(Precision(None)),
           "bf16": ours(Precision(torch.bfloat16)), "auto": ours(auto)}
    feats: dict[str, dict[str, list[np.ndarray]]] = {k: {"a": [], "b": []} for k in paths}
    seconds = dict.fromkeys(paths, 0.0)
    for name, imgs in sets.items():
        for start in range(0, len(imgs), inception.BATCH_SIZE):
            batch = imgs[start:start + inception.BATCH_SIZE]
            for path in paths:  # in alternation: load from elsewhere hits every path alike
                t = time.perf_counter()
                feats[path][name].append(run[path](batch))
                if name == "a":
                    seconds[path] += time.perf_counter() - t
            print(f"  {name} {start + len(batch)}/{len(imgs)}", file=sys.stderr, end="\r")
    fids, gaussians = {}, {}
    for path in paths:
        gaussians[path] = [metrics.Gaussian.of(np.concatenate(feats[path][k])) for k in ("a", "b")]
        fids[path] = metrics.fid(*gaussians[path])
    result = {
        "n": args.n,
        "a": args.a,
        "b": args.b,
        "auto_precision": auto.name,
        "feature_seconds_a": {k: round(v, 1) for k, v in seconds.items()},
        "images_per_s": {k: round(args.n / v, 1) for k, v in seconds.items()},
        "fid": {k: round(v, 3) for k, v in fids.items()},
    }
    if "tool" in paths:
        tool_fid = _tool_fid(*gaussians["tool"])
        result["tool_fid"] = round(tool_fid, 3)
        result["relative_difference_to_tool"] = {k: round(abs(v - tool_fid) / tool_fid, 5) for k, v in fids.items()}
    for path in ("auto", "bf16"):
        if path in fids and ("fp32" in fids or "tool" in fids):
            fp32 = fids.get("fp32", fids.get("tool"))
            result[f"{path}_vs_fp32"] = round(abs(fids[path] - fp32) / fp32, 5)
    if "tool" in paths:
        result["our_maths_on_tool_features"] = round(fids["tool"], 3)
    result["machine"] = machine(device) | {"loadavg_before": load_before}
    emit(result)


def _tool_fid(a: metrics.Gaussian, b: metrics.Gaussian) -> float:
    """FID as the tool computes it: scipy's ``sqrtm`` of the product, real part of the trace."""
    import scipy.linalg

    covmean, _ = scipy.linalg.sqrtm(a.sigma @ b.sigma, disp=False)
    return float(np.real(np.square(a.mu - b.mu).sum() + np.trace(a.sigma + b.sigma - 2 * covmean)))


if __name__ == "__main__":
    main()
