"""Checkpoints and weights: safetensors only, written atomically, checked before use.

A training checkpoint is one safetensors file holding the model, its EMA copy and the Adam
state as tensors, with the step and the config as JSON metadata. One file means one atomic
rename: a crash leaves the previous checkpoint or the new one, never a mix. Nothing here
unpickles user data; the one place a tutorial ``.pth`` is read uses ``weights_only=True``.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from .adam import Optimizer
from .atomic import atomic_path
from .config import Config
from .device import memory_format
from .errors import CheckpointError, ConfigError
from .unet import UNet

FORMAT = "ddpm-studio/1"


@dataclass
class TrainingState:
    """Everything besides tensors that a resumed run needs."""

    step: int
    config: Config
    class_names: list[str]
    train_seconds: float = 0.0  # training time so far, which a time budget continues from


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _optimizer_tensors(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """Adam's per-parameter state as flat tensors, and its param_groups as JSON."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    return tensors, json.dumps(sd["param_groups"])


def _optimizer_state(tensors: dict[str, torch.Tensor], groups_json: str) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": json.loads(groups_json)}


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: Optimizer,
    step: int,
    config: Config,
    scaler_scale: float | None = None,
    train_seconds: float = 0.0,
) -> None:
    """Write a resumable checkpoint atomically (temp file + rename)."""
    tensors = _prefixed("model", model.state_dict()) | _prefixed("ema", ema.state_dict())
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors |= optim_tensors
    meta = {
        "format": FORMAT,
        "step": str(step),
        "config": json.dumps(config.to_dict()),
        "param_groups": groups,
        "scaler_scale": json.dumps(scaler_scale),
        "train_seconds": repr(float(train_seconds)),
    } | _class_meta(model)
    _write(path, tensors, meta)


#: How safetensors' errors name the system error underneath, e.g. "(os error 28)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Write a safetensors file atomically, streamed from the tensors' own memory.

    ``safetensors.torch.save`` returns the file as bytes and holds two whole copies of it on the
    way (for the tutorial's network at a checkpoint 2 x 160 MB, the peak of a ``ddpm train``
    process); ``save_file`` writes from the tensors. Its I/O errors come as text, so the system
    error is passed on as one, which a full disk needs to be reported as such.
    """
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, tmp, metadata=meta)
        except SafetensorError as e:
            found = _OS_ERROR.search(str(e))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code)) from e


def _class_meta(model: torch.nn.Module) -> dict[str, str]:
    """A conditional model's class names, in embedding order; nothing for an unconditional one,
    so its files are byte for byte what they were."""
    names = getattr(model, "class_names", None)
    return {"class_names": json.dumps(list(names))} if names else {}


def _class_names(path: Path, meta: dict[str, str], config: Config) -> list[str]:
    """The class names a file records, which a conditional config requires."""
    if not config.model_params.class_conditional:
        return []
    try:
        names = json.loads(meta.get("class_names", "[]"))
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise CheckpointError(
            f"{path} does not record the class names a class-conditional model needs; use a checkpoint "
            "of that run, or the config it was trained with."
        )
    return names


class IncompatibleCheckpoint(CheckpointError):
    """The checkpoint holds another model or schedule than the config describes: an older
    checkpoint of the same run would not fit either, so resuming stops here."""


#: A safetensors header is a little-endian u64 length and that much JSON; larger is damage.
MAX_HEADER = 100 * 2**20


def _damaged(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is damaged or not a safetensors file ({error}); use an earlier checkpoint.")


def _open_error(path: Path, error: OSError) -> CheckpointError:
    if isinstance(error, FileNotFoundError):
        return CheckpointError(f"{path} does not exist; check the path.")
    return CheckpointError(f"Cannot read {path}: {error.strerror}.")


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file from its header alone, without reading its tensors."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= MAX_HEADER:
                raise ValueError(f"header length {size}")
            header = json.loads(f.read(size))
    except OSError as e:
        raise _open_error(path, e) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _damaged(path, e) from None
    if not isinstance(header, dict):
        raise _damaged(path, ValueError("header is not a mapping"))
    return header.get("__metadata__") or {}


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or a CheckpointError saying it is damaged."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise _open_error(path, e) from None
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, OverflowError) as e:
        raise _damaged(path, e) from None
    return tensors, meta


def recorded_class_names(source: str | os.PathLike) -> list[str]:
    """The class names a run folder or weights file records (empty for unconditional models and
    tutorial files), read from the safetensors header alone: cheap enough to ask at any time."""
    from .runs import RunDir

    path = Path(source)
    if path.is_dir():
        path = RunDir(path).latest_checkpoint() or RunDir(path).weights_path()
    if path.suffix != ".safetensors" or not path.is_file():
        return []
    try:
        names = json.loads(read_metadata(path).get("class_names", "[]"))
    except (CheckpointError, ValueError):
        return []
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else []


def read_training_state(path: Path) -> TrainingState:
    """Step and config of a checkpoint, from its header: no tensors read, no model built."""
    return _state_from_meta(path, read_metadata(path))


def _state_from_meta(path: Path, meta: dict[str, str]) -> TrainingState:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DDPM Studio training checkpoint.")
    try:
        config = Config.from_dict(json.loads(meta["config"]), source=str(path))
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid config: {e}") from None
    return TrainingState(step=int(meta["step"]), config=config, class_names=_class_names(path, meta, config),
                         train_seconds=float(meta.get("train_seconds", "0")))


def shape_mismatches(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Human lines for every key missing, unexpected or of another shape."""
    own = model.state_dict()
    lines = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    lines += [f"{k}: missing from the checkpoint" for k in own if k not in state]
    lines += [f"{k}: not in this model" for k in state if k not in own]
    return lines


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state_dict, or say which shapes differ from the model the config describes."""
    problems = shape_mismatches(model, state)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise IncompatibleCheckpoint(
            f"{source} was made for a different model config ({len(problems)} differences: {shown}). "
            "Use the config the checkpoint was trained with."
        )
    model.load_state_dict(state)


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: Optimizer,
) -> tuple[TrainingState, float | None]:
    """Restore model, EMA and optimizer in place; returns the state and the loss-scaler scale."""
    tensors, meta = _read(path)
    state = _state_from_meta(path, meta)
    load_weights_into(model, _unprefixed("model", tensors), path)
    load_weights_into(ema, _unprefixed("ema", tensors), path)
    optimizer.load_state_dict(_optimizer_state(tensors, meta["param_groups"]))
    return state, json.loads(meta.get("scaler_scale", "null"))


def check_resumable(path: Path, saved: TrainingState, config: Config, run_config: Path,
                    class_names: list[str]) -> None:
    """Refuse to resume ``config`` (a model of ``class_names``) from a checkpoint trained with
    another model or schedule, or on other classes."""
    if saved.config.model_params != config.model_params:
        with torch.device("meta"):  # shapes only: no memory
            ours = UNet(config.model_params, class_names=class_names)
            lines = shape_mismatches(ours, UNet(saved.config.model_params, class_names=saved.class_names).state_dict())
        lines = lines or ["attention layout"]
        raise IncompatibleCheckpoint(
            f"{path} was made for a different model config ({len(lines)} differences: "
            f"{'; '.join(lines[:5])}). Resume with the run's own config ({run_config})."
        )
    if saved.config.diffusion_params != config.diffusion_params:
        raise IncompatibleCheckpoint(
            f"{path} was trained with different diffusion_params ({saved.config.diffusion_params}); "
            f"resume with the run's own config ({run_config})."
        )
    if saved.class_names != class_names:
        raise IncompatibleCheckpoint(
            f"{path} was made for a different model config: it learned the classes "
            f"{', '.join(saved.class_names)}, and the dataset now has {', '.join(class_names)}. "
            "Resume with the dataset it was trained on."
        )


def restore_newest(
    checkpoints: list[Path],
    config: Config,
    run_config: Path,
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: Optimizer,
) -> tuple[TrainingState, float | None]:
    """Restore the newest of ``checkpoints`` (oldest first) that reads cleanly.

    A damaged file is skipped for the one before it; an incompatible one stops the search
    (:class:`IncompatibleCheckpoint`), since its predecessors come from the same run.
    """
    if not checkpoints:
        raise CheckpointError(f"{run_config.parent} has no checkpoint to resume from; start a new run instead.")
    errors = []
    for path in reversed(checkpoints):
        try:
            check_resumable(path, read_training_state(path), config, run_config,
                            list(getattr(model, "class_names", [])))
            return load_checkpoint(path, model=model, ema=ema, optimizer=optimizer)
        except IncompatibleCheckpoint:
            raise
        except CheckpointError as e:
            errors.append(str(e))
    raise CheckpointError("No checkpoint could be loaded: " + " | ".join(errors))


def save_weights(path: Path, model: torch.nn.Module, config: Config) -> None:
    """Sampling weights with the tutorial's key names, the config as metadata."""
    meta = {"format": FORMAT + "/weights", "config": json.dumps(config.to_dict())} | _class_meta(model)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _write(path, tensors, meta)


def load_tutorial_pth(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict saved by the tutorial's ``torch.save``, refusing anything but tensors."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; check the path.") from None
    except pickle.UnpicklingError as e:
        blocked = re.search(r"unsupported GLOBAL (\S+)", str(e))
        if blocked:
            raise CheckpointError(
                f"Refused to open {path}: it asks to run {blocked.group(1)}, which a checkpoint of weights "
                "never needs. Only open checkpoints from people you trust, and prefer .safetensors."
            ) from None
        raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint.") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint ({e}).") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state_dict of tensors.")
    return obj


def load_for_sampling(
    source: str | os.PathLike,
    config: Config | None = None,
    use_ema: bool = True,
    device: torch.device | str | None = None,
) -> tuple[UNet, Config]:
    """A UNet in eval mode from a run folder, a weights/checkpoint .safetensors, or a tutorial .pth."""
    from .runs import RunDir  # runs imports checkpoint for listing; keep the cycle one-way at import

    path = Path(source)
    if path.is_dir():
        found = RunDir(path).latest_checkpoint()
        if found is None:
            weights = RunDir(path).weights_path()
            if not weights.exists():
                raise CheckpointError(f"{path} has no checkpoint or weights yet; train it first.")
            path = weights
        else:
            path = found
    meta: dict[str, str] = {}
    if path.suffix == ".pth" or path.suffix == ".pt":
        if config is None:
            raise CheckpointError(f"{path} is a tutorial checkpoint: give the config it was trained with (--config).")
        state, meta = load_tutorial_pth(path), {}
    else:
        tensors, meta = _read(path)
        fmt = meta.get("format", "")
        if fmt == FORMAT:
            config = config or _state_from_meta(path, meta).config
            state = _unprefixed("ema" if use_ema else "model", tensors)
        else:
            if "config" in meta and config is None:
                config = Config.from_dict(json.loads(meta["config"]), source=str(path))
            if config is None:
                raise CheckpointError(f"{path} carries no config: give the config it was trained with (--config).")
            state = tensors
    config = _with_recorded_prediction(config, meta)
    model = UNet(config.model_params, class_names=_class_names(path, meta, config))
    load_weights_into(model, state, path)
    device = torch.device(device or "cpu")
    return model.to(device, memory_format=memory_format(device)).eval(), config


def _with_recorded_prediction(config: Config, meta: dict[str, str]) -> Config:
    """``config`` with the prediction type the file records, whatever config was passed: a
    network sampled as the wrong type gives noise, with no error to say why."""
    if "config" not in meta:
        return config
    recorded = json.loads(meta["config"]).get("diffusion_params", {}).get("prediction", "eps")
    if recorded == config.diffusion_params.prediction:
        return config
    return config.replace("diffusion_params", prediction=recorded)
