"""The contract every row of the sampler table keeps, run over every registered sampler.

A new sampler is one function and one table row; these tests then hold it to the same promises
as the others, on the analytic point-mass oracle (the ideal noise predictor when every training
image is ``c``, under which every sampler must return ``c``) and on the tiny UNet.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from core import samplers
from core.choices import SAMPLER_SPECS, SAMPLER_TABLE, SAMPLERS
from core.cli import _parser
from core.denoiser import EpsDenoiser
from core.schedule import NoiseSchedule
from core.unet import UNet

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = NoiseSchedule(200)
C = torch.linspace(-0.9, 0.9, 3 * 4 * 4, dtype=torch.float64).view(1, 3, 4, 4)


def point_mass(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    abar = SCHEDULE.alpha_cum_prod64[t].view(-1, 1, 1, 1)
    return ((x.double() - abar.sqrt() * C) / (1 - abar).sqrt()).float()


def option_values(spec):
    """Each option at both ends of its range: the contract must hold across it."""
    return [{}] + [{o.name: v} for o in spec.options for v in (o.low, o.high)]


def test_every_row_has_a_function_and_every_function_a_row():
    assert set(samplers._SAMPLER_FNS) == set(SAMPLERS) == {spec.name for spec in SAMPLER_TABLE}
    assert len(SAMPLERS) == len(SAMPLER_TABLE)  # names are unique


@pytest.mark.parametrize("name", SAMPLERS)
def test_shapes_frames_and_seed(name, tiny_config, one_thread):
    """Same seed, same frames bit for bit at a fixed thread count (the load-following
    controller may change the count, and with it rounding, between runs)."""
    torch.manual_seed(0)
    m = tiny_config.model_params
    denoiser = EpsDenoiser(UNet(m).eval(), NoiseSchedule(12))
    shape = (m.im_channels, m.im_size, m.im_size)
    for options in option_values(SAMPLER_SPECS[name]):
        run = lambda seed: list(samplers.sample(denoiser, num_images=2, image_shape=shape, sampler=name, steps=4,
                                                options=options, seed=seed))
        a, b, c = run(5), run(5), run(6)
        assert [f.index for f in a] == [0, 1, 2, 3] and all(f.num_steps == 4 for f in a)
        assert [f.t for f in a] == samplers.timesteps(name, 12, 4)
        for f in a:
            assert f.xt.shape == f.x0.shape == (2, *shape)
            assert f.xt.dtype == torch.float32 and f.xt.device.type == "cpu"
            assert torch.isfinite(f.xt).all() and f.x0.abs().max() <= 1.0
        assert all(torch.equal(x.xt, y.xt) and torch.equal(x.x0, y.x0) for x, y in zip(a, b))
        assert not torch.equal(a[-1].xt, c[-1].xt)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 5, 200])
def test_converges_to_the_single_training_image(name, steps):
    for options in option_values(SAMPLER_SPECS[name]):
        out = samplers.generate(EpsDenoiser(point_mass, SCHEDULE), num_images=3, image_shape=(3, 4, 4),
                                sampler=name, steps=steps, options=options, seed=1)
        torch.testing.assert_close(out, C.float().expand(3, -1, -1, -1), rtol=0, atol=1e-4)


def test_cli_offers_the_table():
    sample = next(a for a in _parser()._subparsers._group_actions[0].choices["sample"]._actions
                  if a.dest == "sampler")
    assert tuple(sample.choices) == SAMPLERS
    options = {a.dest for a in _parser()._subparsers._group_actions[0].choices["sample"]._actions}
    assert {o.name for spec in SAMPLER_TABLE for o in spec.options} <= options


@pytest.mark.parametrize("doc", ["README.md", "docs/ENGINE_API.md"])
def test_docs_name_every_sampler(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for name in SAMPLERS:
        assert re.search(rf"(?<![\w+]){re.escape(name)}(?![\w+])", text), f"{doc} does not mention {name}"
