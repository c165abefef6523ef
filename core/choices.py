"""Names the window lists before torch is loaded: built-in datasets, the sampler table and the
default guidance scale.

Kept free of torch so the GUI can fill its demo buttons and sampler list the moment the window
appears. :data:`SAMPLER_TABLE` is the one list of samplers: the CLI's ``--sampler`` choices and
help, the window's sampler list, the self-test and the sampling driver all read it, and
``core.samplers`` registers one function per row.
"""
from __future__ import annotations

from dataclasses import dataclass

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS: dict[str, str] = {
    "mnist": "MNIST digits (5,000)",
    "fashion-mnist": "Fashion-MNIST (10,000)",
}


@dataclass(frozen=True)
class SamplerOption:
    """A number one sampler takes besides the step count, with its allowed range."""

    name: str
    help: str
    default: float
    low: float
    high: float


@dataclass(frozen=True)
class SamplerSpec:
    """One row of the sampler table.

    ``default_steps`` is the step count used when none is given (capped at the schedule's
    length); None means every timestep, the tutorial's full chain.
    """

    name: str
    title: str
    default_steps: int | None
    options: tuple[SamplerOption, ...] = ()

    def option(self, name: str) -> SamplerOption | None:
        return next((o for o in self.options if o.name == name), None)


ETA = SamplerOption("eta", "noise per step: 0 is deterministic, 1 is like DDPM", 0.0, 0.0, 1.0)

#: Default step counts: the tutorial's full chain for DDPM; the step counts at which DDIM (Song
#: et al. 2020, table 1) and DPM-Solver++ (Lu et al. 2022, fig. 1) reach most of their quality.
SAMPLER_TABLE: tuple[SamplerSpec, ...] = (
    SamplerSpec("ddpm", "DDPM (the tutorial's ancestral sampler)", None),
    SamplerSpec("ddim", "DDIM", 50, (ETA,)),
    SamplerSpec("dpm++", "DPM-Solver++ (2M)", 20),
    SamplerSpec("dpm++3m", "DPM-Solver++ (3M)", 20),
    SamplerSpec("unipc", "UniPC (bh2)", 20),
)
SAMPLER_SPECS: dict[str, SamplerSpec] = {spec.name: spec for spec in SAMPLER_TABLE}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_SPECS)

#: The sampler the window and ``ddpm eval`` start with; ``ddpm sample`` keeps the tutorial's DDPM.
DEFAULT_SAMPLER = "dpm++"

#: Step counts a sampler comparison (``ddpm eval --compare-samplers``, the window's table) runs every
#: sampler at: from rough to about converged for DDIM and DPM-Solver++.
COMPARISON_STEPS: tuple[int, ...] = (10, 20, 50)

#: Classifier-free guidance scale used when none is given (see :mod:`core.guidance`). 3, not 2:
#: after the ten-minute preset, Fashion-MNIST samples show the class asked for 86 % of the time at
#: 2 and 95 % at 3 (MNIST: 98 % and 99.6 %); docs/guidance/README.md has the measurements.
DEFAULT_GUIDANCE = 3.0
