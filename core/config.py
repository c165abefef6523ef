"""The run configuration: the tutorial's four YAML sections, typed, documented and validated.

A tutorial YAML loads unchanged and means what it meant there. Keys the product adds live in the
same sections, each with a default, so an old file gets the old behaviour. Every field carries a
``doc`` (shown as the GUI's tooltip) and validation names the field and the fix before anything
heavy runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .atomic import atomic_write_text
from .errors import ConfigError, ConfigProblem

GROUPS = 8  # GroupNorm groups, fixed by the tutorial's architecture
UNET_OUT_CHANNELS = 16  # channels of the tutorial's last up block, before norm_out/conv_out


def _f(default: Any, doc: str, **meta: Any) -> Any:
    """A dataclass field with its user-facing documentation attached."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"doc": doc, **meta})
    return field(default=default, metadata={"doc": doc, **meta})


@dataclass
class DatasetParams:
    im_path: str = _f(
        "data/train/images",
        "Folder of training images (searched recursively; subfolders become class labels), an "
        "MNIST-format *-images-idx3-ubyte[.gz] file, or builtin:mnist / builtin:fashion-mnist.",
    )


@dataclass
class DiffusionParams:
    num_timesteps: int = _f(1000, "Number of noising steps T of the forward process.", min=2)
    beta_start: float = _f(0.0001, "Noise variance added at the first step (linear schedule).")
    beta_end: float = _f(0.02, "Noise variance added at the last step (linear schedule).")
    schedule: Literal["linear", "cosine"] = _f(
        "linear",
        "Noise schedule: 'linear' (Ho et al. 2020, the tutorial's) or 'cosine' (Nichol & "
        "Dhariwal 2021, better for small images).",
    )
    prediction: Literal["eps", "v"] = _f(
        "eps",
        "What the network predicts: 'eps', the noise (the tutorial's), or 'v', the velocity "
        "sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022). Recorded in checkpoints: a "
        "model is always sampled as it was trained.",
    )


@dataclass
class ModelParams:
    im_channels: int = _f(1, "Image channels: 1 for grayscale, 3 for RGB.", choices=(1, 3))
    im_size: int = _f(28, "Images are resized and centre-cropped to this many pixels square.", min=4)
    down_channels: list[int] = _f(
        [32, 64, 128, 256], "Channels at each level of the UNet's encoder (one more than down blocks)."
    )
    mid_channels: list[int] = _f(
        [256, 256, 128],
        "Channels through the middle blocks: first must equal the last down channel, last the "
        "second-to-last down channel.",
    )
    down_sample: list[bool] = _f(
        [True, True, False], "Whether each down block halves the resolution (len = len(down_channels)-1)."
    )
    time_emb_dim: int = _f(128, "Size of the timestep embedding (even).", min=2)
    num_down_layers: int = _f(2, "ResNet+attention layers in each down block.", min=1)
    num_mid_layers: int = _f(2, "Attention+ResNet layers in each mid block.", min=1)
    num_up_layers: int = _f(2, "ResNet+attention layers in each up block.", min=1)
    num_heads: int = _f(4, "Attention heads; every attended channel count must divide by it.", min=1)
    down_attention: Optional[list[bool]] = _f(
        None,
        "Self-attention in each down block (and its mirrored up block); empty means everywhere, "
        "as in the tutorial. Attention only at low resolution trains much faster on a CPU.",
    )
    class_conditional: bool = _f(
        False,
        "Learn the dataset's classes (its subfolders, or an IDX file's labels) so that samples can be "
        "asked for a class, with classifier-free guidance. Costs about twice the work per sampling "
        "step when guided (the model runs with and without the class); training costs the same.",
    )

    def attention_flags(self) -> list[bool]:
        """Per down block, whether it (and its mirrored up block) attends."""
        if self.down_attention is None:
            return [True] * (len(self.down_channels) - 1)
        return list(self.down_attention)


@dataclass
class TrainParams:
    task_name: str = _f("default", "Name of the run; its folder is ./<task_name> on the command line.")
    batch_size: int = _f(64, "Images per training step.", min=1)
    num_epochs: int = _f(40, "Passes over the dataset (max_steps, if set, stops earlier).", min=1)
    num_samples: int = _f(100, "Images in a sample grid.", min=1)
    num_grid_rows: int = _f(10, "Images per row of a sample grid.", min=1)
    lr: float = _f(0.0001, "Adam learning rate.", exclusive_min=0.0)
    ckpt_name: str = _f("ddpm_ckpt.pth", "File name of the tutorial-compatible weights export in the run folder.")
    seed: int = _f(0, "Seed for weights, batches and noise: the same seed gives the same run.", min=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = _f(
        "auto", "Where to train: auto picks cuda, then mps, then cpu."
    )
    ema_decay: float = _f(
        0.999, "Decay of the exponential moving average of the weights used for sampling (0 disables).",
        min=0.0, exclusive_max=1.0,
    )
    checkpoint_every_steps: int = _f(500, "Write a checkpoint every this many steps (and on stop).", min=1)
    keep_checkpoints: int = _f(3, "How many recent checkpoints to keep on disk.", min=1)
    max_steps: Optional[int] = _f(None, "Stop after this many steps in total (empty: num_epochs decides).", min=1)
    sample_every_steps: Optional[int] = _f(
        None, "Make a small preview grid every this many steps (empty: never).", min=1
    )
    eval_every_steps: Optional[int] = _f(
        None, "Measure sample quality (KID of 200 samples against the training images) every this many "
        "steps, for the quality curve (empty: never). Needs the FID network file.", min=1
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto",
        "Arithmetic for the model: auto uses bf16 where the hardware has it (CUDA, AVX-512 BF16 CPUs) "
        "and it is faster when timed, fp16 with loss scaling on older GPUs, fp32 otherwise.",
    )
    attention: Literal["auto", "narrow", "chunked", "sdpa", "naive"] = _f(
        "auto",
        "Attention kernel: auto times the kernels on this machine at the start (once, then remembered) "
        "and keeps the fastest; narrow (fp32 heads of 4-32 channels on AVX2 CPUs), chunked, sdpa and "
        "naive compute the same result at different speeds.",
    )
    compile: bool = _f(False, "Compile the model with torch.compile (falls back if it cannot).")
    cuda_graphs: bool = _f(
        True,
        "On an NVIDIA GPU, replay each step's forward and backward passes as CUDA graphs: the same "
        "arithmetic with one launch instead of about a thousand (ignored elsewhere and with micro-batches).",
    )
    micro_batch_size: Optional[int] = _f(
        None,
        "Images per forward/backward pass: a larger batch is split and the gradients added up, which "
        "gives the same step in less memory (empty: at most 32 on the CPU, the whole batch elsewhere).",
        min=1,
    )
    max_minutes: Optional[float] = _f(
        None,
        "Stop after this many minutes of training time (checkpoints, previews and pauses do not "
        "count), writing a checkpoint as max_steps does; empty: no time limit.",
        exclusive_min=0.0,
    )
    lr_schedule: Literal["constant", "cosine"] = _f(
        "constant",
        "Learning rate over the run: 'constant' (the tutorial's) or 'cosine', decaying to zero at "
        "the end of max_steps (or num_epochs) or of max_minutes, whichever comes first.",
    )
    warmup_steps: int = _f(0, "Steps over which the learning rate rises linearly from near zero (0: none).", min=0)
    ema_halflife_kimg: Optional[float] = _f(
        None,
        "EMA half-life in thousands of images (EDM's ema_halflife_kimg); replaces ema_decay when "
        "set. Empty: ema_decay decides.",
        exclusive_min=0.0,
    )
    ema_rampup: Optional[float] = _f(
        None,
        "With ema_halflife_kimg: the half-life is at most this fraction of the images seen so "
        "far (EDM uses 0.05), so a short run does not average in its random start. Empty: no ramp-up.",
        exclusive_min=0.0,
    )
    loss_weighting: Literal["none", "min_snr"] = _f(
        "none",
        "Weight of each timestep's loss: 'none' (the tutorial's plain MSE) or 'min_snr' "
        "(Hang et al. 2023: balances easy low-noise and hard high-noise steps; converges faster).",
    )
    min_snr_gamma: float = _f(5.0, "The SNR at which min_snr clamps the weights (5 in the paper).", exclusive_min=0.0)
    cond_drop_prob: float = _f(
        0.1,
        "Class-conditional runs: how often a training image's class is hidden, which teaches the "
        "model to draw without a class too, as guided sampling needs (Ho & Salimans 2022).",
        min=0.0, exclusive_max=1.0,
    )


SECTIONS: dict[str, type] = {
    "dataset_params": DatasetParams,
    "diffusion_params": DiffusionParams,
    "model_params": ModelParams,
    "train_params": TrainParams,
}


@dataclass
class Config:
    dataset_params: DatasetParams = field(default_factory=DatasetParams)
    diffusion_params: DiffusionParams = field(default_factory=DiffusionParams)
    model_params: ModelParams = field(default_factory=ModelParams)
    train_params: TrainParams = field(default_factory=TrainParams)
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data in the tutorial's layout, ready for YAML or JSON."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def replace(self, section: str, **changes: Any) -> Config:
        """A validated copy with some fields of one section changed."""
        data = self.to_dict()
        data[section].update(changes)
        replaced = Config.from_dict(data)
        replaced.warnings = list(self.warnings)  # the keys ignored when the file was read stay reported
        return replaced

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Config:
        """Parse and validate; raises :class:`ConfigError` listing every problem found."""
        problems: list[ConfigProblem] = []
        warnings: list[str] = []
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([ConfigProblem("", f"the config must be a mapping of sections, got {type(data).__name__}")], source)
        for key in data:
            if key not in SECTIONS:
                warnings.append(_unknown(key, SECTIONS))
        sections = {}
        for name, section_cls in SECTIONS.items():
            raw = data.get(name) or {}
            if not isinstance(raw, dict):
                problems.append(ConfigProblem(name, f"must be a mapping of keys, got {type(raw).__name__}"))
                raw = {}
            sections[name] = _parse_section(name, section_cls, raw, problems, warnings)
        if problems:
            raise ConfigError(problems, source)
        cfg = cls(**sections, warnings=warnings)
        problems = validate(cfg)
        if problems:
            raise ConfigError(problems, source)
        return cfg


def _unknown(key: str, known: typing.Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown key '{prefix}{key}' ignored{hint}"


def _parse_section(name: str, cls: type, raw: dict, problems: list[ConfigProblem], warnings: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            warnings.append(_unknown(key, fields, f"{name}."))
            continue
        where = f"{name}.{key}"
        try:
            values[key] = _coerce(value, hints[key], where)
        except _Invalid as e:
            problems.append(e.problem)
    return cls(**values)


class _Invalid(ValueError):
    """A value that does not fit its field's type."""

    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type hint, accepting harmless spellings (1e-4 as text)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None or value == "":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in args:
            raise _Invalid(ConfigProblem(where, f"must be one of {', '.join(map(str, args))}; got {value!r}"))
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(ConfigProblem(where, f"must be a list like [32, 64], got {value!r}"))
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise _Invalid(ConfigProblem(where, f"must be true or false, got {value!r}"))
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _Invalid(ConfigProblem(where, f"must be a whole number, got {value!r}"))
        return value
    if hint is float:
        if isinstance(value, bool):
            raise _Invalid(ConfigProblem(where, f"must be a number, got {value!r}"))
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _Invalid(ConfigProblem(where, f"must be a number, got {value!r}")) from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _Invalid(ConfigProblem(where, f"must be text, got {value!r}"))
        return str(value)
    raise TypeError(f"unsupported field type {hint} for {where}")


def _bounds(cfg: Config) -> list[ConfigProblem]:
    """Numeric bounds declared in each field's metadata."""
    problems: list[ConfigProblem] = []
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None or isinstance(value, (list, str, bool)):
                continue
            meta, where = f.metadata, f"{section}.{f.name}"
            if "min" in meta and value < meta["min"]:
                problems.append(ConfigProblem(where, f"must be at least {meta['min']}, got {value}"))
            if "exclusive_min" in meta and value <= meta["exclusive_min"]:
                problems.append(ConfigProblem(where, f"must be greater than {meta['exclusive_min']}, got {value}"))
            if "exclusive_max" in meta and value >= meta["exclusive_max"]:
                problems.append(ConfigProblem(where, f"must be less than {meta['exclusive_max']}, got {value}"))
            if "choices" in meta and value not in meta["choices"]:
                problems.append(ConfigProblem(where, f"must be one of {', '.join(map(str, meta['choices']))}, got {value}"))
    return problems


def _model_problems(m: ModelParams) -> list[ConfigProblem]:
    """The architecture's structural constraints, each phrased as the fix."""
    p: list[ConfigProblem] = []
    where = "model_params"
    if len(m.down_channels) < 2:
        p.append(ConfigProblem(f"{where}.down_channels", f"needs at least 2 entries, got {m.down_channels}"))
        return p
    if len(m.mid_channels) < 2:
        p.append(ConfigProblem(f"{where}.mid_channels", f"needs at least 2 entries, got {m.mid_channels}"))
        return p
    for name in ("down_channels", "mid_channels"):
        for i, c in enumerate(getattr(m, name)):
            if c <= 0 or c % GROUPS:
                p.append(ConfigProblem(f"{where}.{name}[{i}]", f"must be a positive multiple of {GROUPS} (GroupNorm groups), got {c}"))
    if m.mid_channels[0] != m.down_channels[-1]:
        p.append(ConfigProblem(f"{where}.mid_channels[0]", f"must equal down_channels[-1] ({m.down_channels[-1]}), got {m.mid_channels[0]}"))
    if m.mid_channels[-1] != m.down_channels[-2]:
        p.append(ConfigProblem(f"{where}.mid_channels[-1]", f"must equal down_channels[-2] ({m.down_channels[-2]}), got {m.mid_channels[-1]}"))
    n_blocks = len(m.down_channels) - 1
    if len(m.down_sample) != n_blocks:
        p.append(ConfigProblem(f"{where}.down_sample", f"must have len(down_channels)-1 = {n_blocks} entries, got {len(m.down_sample)}"))
    if m.down_attention is not None and len(m.down_attention) != n_blocks:
        p.append(ConfigProblem(f"{where}.down_attention", f"must have len(down_channels)-1 = {n_blocks} entries (or be empty), got {len(m.down_attention)}"))
    factor = 2 ** sum(bool(d) for d in m.down_sample)
    if m.im_size % factor:
        p.append(ConfigProblem(f"{where}.im_size", f"must be divisible by {factor} (2 ^ number of down_sample=True), got {m.im_size}"))
    if m.time_emb_dim % 2:
        p.append(ConfigProblem(f"{where}.time_emb_dim", f"must be even, got {m.time_emb_dim}"))
    if p:
        return p
    attended = [(f"down_channels[{i+1}]", m.down_channels[i + 1]) for i, a in enumerate(m.attention_flags()) if a]
    attended += [(f"down_channels[{i}]", m.down_channels[i]) for i, a in enumerate(m.attention_flags()) if a and i > 0]
    attended += [(f"mid_channels[{i+1}]", c) for i, c in enumerate(m.mid_channels[1:])]
    for name, c in attended:
        if c % m.num_heads:
            p.append(ConfigProblem(f"{where}.{name}", f"({c}) must be divisible by num_heads ({m.num_heads}); change num_heads or the channels"))
    return p


def validate(cfg: Config) -> list[ConfigProblem]:
    """Every problem with ``cfg``, each naming the field and the fix; empty means valid."""
    p = _bounds(cfg)
    d = cfg.diffusion_params
    if d.schedule == "linear":
        if not 0 < d.beta_start < 1:
            p.append(ConfigProblem("diffusion_params.beta_start", f"must be between 0 and 1, got {d.beta_start}"))
        if not 0 < d.beta_end < 1:
            p.append(ConfigProblem("diffusion_params.beta_end", f"must be between 0 and 1, got {d.beta_end}"))
        if d.beta_start >= d.beta_end:
            p.append(ConfigProblem("diffusion_params.beta_start", f"({d.beta_start}) must be less than beta_end ({d.beta_end})"))
    p += _model_problems(cfg.model_params)
    t = cfg.train_params
    if t.num_grid_rows > t.num_samples:
        p.append(ConfigProblem("train_params.num_grid_rows", f"({t.num_grid_rows}) cannot exceed num_samples ({t.num_samples})"))
    if not t.task_name.strip() or any(c in t.task_name for c in '/\\:*?"<>|'):
        p.append(ConfigProblem("train_params.task_name", f"must be a plain folder name, got {t.task_name!r}"))
    return list(dict.fromkeys(p))


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config (``yaml.safe_load``: no code runs)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", "config file not found; check the path")], str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([ConfigProblem("", f"cannot read the config ({e})")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(e, text)], str(path)) from None
    return Config.from_dict(data, source=str(path))


def _yaml_problem(error: yaml.YAMLError, text: str) -> ConfigProblem:
    """Where the YAML broke, as an editor counts (1-based line and column), then that line with
    a caret under the column: PyYAML's own message repeats a placeholder file name and marks."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return ConfigProblem("", f"not valid YAML: {error}".replace("\n", " "))
    problem = getattr(error, "problem", None) or "syntax error"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    return ConfigProblem("", f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}\n"
                             f"    {line}\n    {' ' * mark.column}^")


def dump_config(cfg: Config) -> str:
    """YAML text in the tutorial's section order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically."""
    atomic_write_text(path, dump_config(cfg))

