"""Checkpoints and weights: safetensors round trips, tutorial .pth import, nothing unpickled."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.checkpoint import load_for_sampling, load_tutorial_pth, read_training_state, save_weights
from core.config import Config, load_config
from core.errors import CheckpointError, DiskFullError
from core.unet import UNet

from .conftest import tiny_config_dict


def test_tutorial_pth_imports_and_computes_the_same(fixtures_dir, tmp_path):
    """A plain state_dict .pth as the tutorial's torch.save writes it loads with weights_only=True."""
    cfg = load_config(fixtures_dir / "unet_tiny_gray16.yaml")
    state = load_file(fixtures_dir / "unet_tiny_gray16.safetensors")
    torch.save(state, tmp_path / "ddpm_ckpt.pth")
    model, _ = load_for_sampling(tmp_path / "ddpm_ckpt.pth", cfg)
    io = load_file(fixtures_dir / "unet_tiny_gray16_io.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model(io["x"], io["t"]), io["eps"], rtol=1e-5, atol=1e-5)


def test_tutorial_pth_needs_config(tmp_path):
    torch.save(UNet(Config.from_dict(tiny_config_dict()).model_params).state_dict(), tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="--config"):
        load_for_sampling(tmp_path / "a.pth")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pth_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv_in.weight": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="Refused to open .*system"):
        load_tutorial_pth(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"hello world", bytes(range(256)) * 12, b""])
def test_garbage_pth_is_reported_damaged(tmp_path, content):
    (tmp_path / "junk.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match="damaged or not a PyTorch checkpoint"):
        load_tutorial_pth(tmp_path / "junk.pth")


def test_weights_round_trip_with_config(tmp_path):
    cfg = Config.from_dict(tiny_config_dict())
    model = UNet(cfg.model_params)
    save_weights(tmp_path / "w.safetensors", model, cfg)
    loaded, loaded_cfg = load_for_sampling(tmp_path / "w.safetensors")
    assert loaded_cfg == cfg
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_a_full_disk_under_safetensors_is_reported_as_such_and_keeps_the_old_file(tmp_path, monkeypatch):
    """safetensors names I/O errors only in its message; the full disk must still read as one."""
    import core.checkpoint
    from safetensors import SafetensorError

    cfg = Config.from_dict(tiny_config_dict())
    path = tmp_path / "w.safetensors"
    save_weights(path, UNet(cfg.model_params), cfg)
    before = path.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(core.checkpoint, "save_file", full_disk)
    with pytest.raises(DiskFullError, match="w.safetensors"):
        save_weights(path, UNet(cfg.model_params), cfg)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.safetensors"]


def test_weights_from_another_config_name_the_shapes(tmp_path):
    cfg = Config.from_dict(tiny_config_dict())
    save_weights(tmp_path / "w.safetensors", UNet(cfg.model_params), cfg)
    other = tiny_config_dict()
    other["model_params"]["down_channels"] = [16, 32, 48]
    other["model_params"]["mid_channels"] = [48, 32]
    with pytest.raises(CheckpointError, match=r"different model config .*checkpoint \(32, 16, 3, 3\) vs model \(48, 16, 3, 3\)|vs model"):
        load_for_sampling(tmp_path / "w.safetensors", Config.from_dict(other))


@pytest.mark.parametrize("cut", [0, 7, 100, -10])
def test_truncated_file_is_reported_damaged(tmp_path, cut):
    cfg = Config.from_dict(tiny_config_dict())
    path = tmp_path / "w.safetensors"
    save_weights(path, UNet(cfg.model_params), cfg)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="damaged"):
        load_for_sampling(path)


def test_non_checkpoint_safetensors_is_refused_for_resume(tmp_path):
    cfg = Config.from_dict(tiny_config_dict())
    save_weights(tmp_path / "w.safetensors", UNet(cfg.model_params), cfg)
    with pytest.raises(CheckpointError, match="not a DDPM Studio training checkpoint"):
        read_training_state(tmp_path / "w.safetensors")


LEGACY_CHECKPOINT = Path(__file__).parent / "fixtures" / "legacy-run" / "checkpoints" / "step-000004.safetensors"


def test_training_state_comes_from_the_header_alone(tmp_path):
    """Listing a run's checkpoints must not read hundreds of MB of tensors: a checkpoint whose
    tensor bytes are gone still tells its step and config."""
    data = LEGACY_CHECKPOINT.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    headless = tmp_path / "step-000004.safetensors"
    headless.write_bytes(data[:header_end])
    state = read_training_state(headless)
    assert state.step == 4 and state.config == read_training_state(LEGACY_CHECKPOINT).config
    with pytest.raises(CheckpointError, match="damaged"):
        load_for_sampling(headless)


@pytest.mark.parametrize("header", [b"\xff" * 8, (5).to_bytes(8, "little") + b"nojs", b"abc"])
def test_a_damaged_header_is_reported_damaged(tmp_path, header):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(header)
    with pytest.raises(CheckpointError, match="damaged"):
        read_training_state(path)
