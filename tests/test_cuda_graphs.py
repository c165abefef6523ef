"""CUDA graphs replay the eager step: same losses, same weights; shapes beyond the recorded ones
run eagerly. The replay tests need a GPU (run them on one with ``pytest tests/test_cuda_graphs.py``);
when graphs apply runs everywhere."""
from __future__ import annotations

import math

import pytest
import torch

from core.cuda_graphs import MAX_SHAPES, GraphedNetwork, use_graphs
from core.trainer import Trainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("enabled", "device", "parts", "world", "expected"), [
    (True, "cuda", 1, 1, True),
    (False, "cuda", 1, 1, False),  # the config says no
    (True, "cpu", 1, 1, False),  # nothing to replay on the CPU
    (True, "cuda", 2, 1, False),  # micro-batches add their gradients: one pass per step only
    (True, "cuda", 1, 2, False),  # DDP's gradient hooks run during backward
])
def test_when_graphs_apply(enabled, device, parts, world, expected):
    assert use_graphs(enabled, torch.device(device), parts, world) is expected


def test_cpu_training_steps_call_the_network_itself(tiny_config, tmp_path):
    trainer = Trainer(tiny_config.replace("train_params", device="cpu"), tmp_path)
    assert trainer.step_network(trainer.model) is trainer.model


def _trainer(tiny_config, tmp_path, graphs: bool) -> Trainer:
    config = tiny_config.replace("train_params", device="cuda", precision="fp32", cuda_graphs=graphs,
                                 micro_batch_size=None)
    return Trainer(config, tmp_path / str(graphs), attention_impl="sdpa")


@cuda
def test_replayed_steps_match_eager_steps(tiny_config, tmp_path):
    torch.backends.cudnn.deterministic = True
    images = torch.rand((8, 1, tiny_config.model_params.im_size, tiny_config.model_params.im_size)) * 2 - 1
    runs = {}
    for graphs in (False, True):
        trainer = _trainer(tiny_config, tmp_path, graphs)
        net = trainer.step_network(trainer.model)
        assert isinstance(net, GraphedNetwork) is graphs
        losses = []
        for _ in range(4):
            losses.append(trainer._train_step(net, images))
            trainer.step += 1
        runs[graphs] = losses, torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        if graphs:
            assert not net.errors
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-4, atol=1e-5)


@cuda
def test_shapes_past_the_limit_run_eagerly(tiny_config, tmp_path):
    trainer = _trainer(tiny_config, tmp_path, True)
    net = trainer.step_network(trainer.model)
    size = tiny_config.model_params.im_size
    for batch in range(2, 3 + MAX_SHAPES):
        loss = trainer._train_step(net, torch.rand((batch, 1, size, size)) * 2 - 1)
        assert math.isfinite(loss)
    assert len(net._graphed) == MAX_SHAPES and not net.errors
