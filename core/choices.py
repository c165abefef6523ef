"""Names the window lists before torch is loaded: built-in datasets, samplers, their defaults.

Kept free of torch so the GUI can fill its demo buttons and sampler list the moment the window
appears; ``core.data`` and ``core.samplers`` take their names from here.
"""
from __future__ import annotations

from typing import Literal

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS: dict[str, str] = {
    "mnist": "MNIST digits (5,000)",
    "fashion-mnist": "Fashion-MNIST (10,000)",
}

SamplerName = Literal["ddpm", "ddim", "dpm++"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm++")
SAMPLER_TITLES: dict[str, str] = {
    "ddpm": "DDPM (the tutorial's ancestral sampler)",
    "ddim": "DDIM",
    "dpm++": "DPM-Solver++ (2M)",
}

#: Steps used when ``steps`` is None (capped at the schedule's length): the tutorial's full chain
#: for DDPM; the step counts at which DDIM (Song et al. 2020, table 1) and DPM-Solver++ (Lu et
#: al. 2022, fig. 1) reach most of their quality.
DEFAULT_STEPS: dict[str, int | None] = {"ddpm": None, "ddim": 50, "dpm++": 20}

#: Classifier-free guidance scale used when none is given (see :mod:`core.guidance`).
DEFAULT_GUIDANCE = 2.0
