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
    SamplerSpec("dpm++sde", "DPM-Solver++ (2M SDE)", 20),
    SamplerSpec("unipc", "UniPC (bh2)", 20),
)
SAMPLER_SPECS: dict[str, SamplerSpec] = {spec.name: spec for spec in SAMPLER_TABLE}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_SPECS)

#: The sampler and step count the window, ``ddpm eval``, training previews and the quality curve
#: use; ``ddpm sample`` keeps the tutorial's full DDPM chain. A stochastic sampler, because the
#: models people have are young: the noise added back at each step lets later steps correct an
#: unfinished model's errors, which a deterministic solver follows to the end (after ten minutes
#: of the ``fast-cpu`` preset DDPM's step respaced to 20 steps scored FID 24.7 on MNIST and 54.3
#: on Fashion-MNIST where DPM-Solver++ (2M) scored 55.8 and 66.0; after 30 minutes 24.6 against
#: 35-38 for every ODE solver, at N = 500). SDE-DPM-Solver++(2M) is DDPM's respaced step plus a
#: second-order correction: on three Fashion-MNIST networks it scored 8-10 % lower FID than
#: DDPM's step at 20 steps (48.6 / 43.7 / 49.6 against 53.4 / 48.6 / 53.8), and on MNIST the
#: same (25.4 against 25.3; N = 1000, docs/quality/README.md).
DEFAULT_SAMPLER = "dpm++sde"
DEFAULT_STEPS = 20


def app_steps(sampler: str, num_timesteps: int) -> int:
    """The step count the window, ``ddpm eval``, previews and the quality curve use when none is
    given: the sampler's row, and :data:`DEFAULT_STEPS` for DDPM, whose own row keeps the
    tutorial's full chain for ``ddpm sample`` (respaced to 20 steps it scores as well as the
    chain, docs/quality/README.md); capped at the schedule's length."""
    return min(SAMPLER_SPECS[sampler].default_steps or DEFAULT_STEPS, num_timesteps)


#: Step counts a sampler comparison (``ddpm eval --compare-samplers``, the window's table) runs every
#: sampler at: from rough to about converged for DDIM and DPM-Solver++.
COMPARISON_STEPS: tuple[int, ...] = (10, 20, 50)

#: Classifier-free guidance scale used when none is given (see :mod:`core.guidance`). 3, not 2:
#: after the ten-minute preset, Fashion-MNIST samples show the class asked for 86 % of the time at
#: 2 and 95 % at 3 (MNIST: 98 % and 99.6 %); docs/guidance/README.md has the measurements.
DEFAULT_GUIDANCE = 3.0
