"""The config schema: tutorial files load unchanged, bad values are refused with the field and the fix."""
from __future__ import annotations

import pytest
import yaml

from core.config import Config, ConfigError, dump_config, load_config, save_config

from .conftest import tiny_config_dict


def test_tutorial_yaml_loads_unchanged(fixtures_dir):
    cfg = load_config(fixtures_dir / "tutorial_default.yaml")
    m, t, d = cfg.model_params, cfg.train_params, cfg.diffusion_params
    assert (m.im_channels, m.im_size, m.down_channels, m.mid_channels) == (1, 28, [32, 64, 128, 256], [256, 256, 128])
    assert m.down_sample == [True, True, False] and m.time_emb_dim == 128 and m.num_heads == 4
    assert (t.batch_size, t.lr, t.num_epochs, t.ckpt_name) == (64, 1e-4, 40, "ddpm_ckpt.pth")
    assert (d.num_timesteps, d.beta_start, d.beta_end, d.schedule) == (1000, 1e-4, 0.02, "linear")
    assert cfg.dataset_params.im_path == "data/train/images"
    assert cfg.warnings == []
    assert cfg == Config()  # the defaults are the tutorial's


def test_round_trip(tmp_path):
    cfg = Config.from_dict(tiny_config_dict())
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load(dump_config(cfg))["train_params"]["seed"] == 0


def _problems(section: str, **changes) -> str:
    data = tiny_config_dict()
    data[section].update(changes)
    with pytest.raises(ConfigError) as e:
        Config.from_dict(data)
    return str(e.value)


@pytest.mark.parametrize(
    "section, changes, expected",
    [
        ("model_params", {"down_channels": [16, 32, 36]}, "model_params.down_channels[2] must be a positive multiple of 8"),
        ("model_params", {"mid_channels": [24, 32]}, "model_params.mid_channels[0] must equal down_channels[-1] (32), got 24"),
        ("model_params", {"mid_channels": [32, 24]}, "model_params.mid_channels[-1] must equal down_channels[-2] (32), got 24"),
        ("model_params", {"down_sample": [True]}, "down_sample must have len(down_channels)-1 = 2 entries, got 1"),
        ("model_params", {"im_size": 18, "down_sample": [True, True]}, "im_size must be divisible by 4"),
        ("model_params", {"num_heads": 3}, "must be divisible by num_heads (3)"),
        ("model_params", {"time_emb_dim": 31}, "time_emb_dim must be even"),
        ("model_params", {"im_channels": 2}, "im_channels must be one of 1, 3"),
        ("model_params", {"down_channels": "16,32"}, "down_channels must be a list"),
        ("train_params", {"lr": 0}, "train_params.lr must be greater than 0"),
        ("train_params", {"lr": "fast"}, "train_params.lr must be a number, got 'fast'"),
        ("train_params", {"batch_size": 0}, "train_params.batch_size must be at least 1"),
        ("train_params", {"batch_size": 2.5}, "train_params.batch_size must be a whole number"),
        ("train_params", {"device": "tpu"}, "train_params.device must be one of auto, cpu, cuda, mps"),
        ("train_params", {"ema_decay": 1.0}, "train_params.ema_decay must be less than 1.0"),
        ("diffusion_params", {"num_timesteps": 0}, "diffusion_params.num_timesteps must be at least 2"),
        ("diffusion_params", {"beta_start": 0.03}, "beta_start (0.03) must be less than beta_end (0.02)"),
        ("diffusion_params", {"schedule": "sigmoid"}, "diffusion_params.schedule must be one of linear, cosine"),
    ],
)
def test_invalid_values_name_field_and_fix(section, changes, expected):
    assert expected in _problems(section, **changes)


def test_tutorial_mid_channel_example():
    data = tiny_config_dict()
    data["model_params"].update(down_channels=[32, 64, 128, 256], mid_channels=[128, 256, 128], down_sample=[True, True, False],
                                down_attention=None)
    with pytest.raises(ConfigError, match=r"model_params.mid_channels\[0\] must equal down_channels\[-1\] \(256\), got 128"):
        Config.from_dict(data)


def test_all_problems_reported_at_once():
    data = tiny_config_dict()
    data["train_params"].update(lr=-1, batch_size=0)
    with pytest.raises(ConfigError) as e:
        Config.from_dict(data)
    assert len(e.value.problems) == 2


def test_problems_carry_their_field_and_message_apart():
    data = tiny_config_dict()
    data["train_params"].update(lr="fast", batch_size=0)
    data["model_params"]["down_channels"] = [16, 33, 32]
    with pytest.raises(ConfigError) as e:
        Config.from_dict(data)
    assert [(p.field, p.key) for p in e.value.problems] == [("train_params.lr", "train_params.lr")]
    assert e.value.problems[0].message == "must be a number, got 'fast'"
    data["train_params"]["lr"] = 1e-3
    with pytest.raises(ConfigError) as e:
        Config.from_dict(data)
    fields = {p.field: p for p in e.value.problems}
    assert fields["train_params.batch_size"].message == "must be at least 1, got 0"
    entry = fields["model_params.down_channels[1]"]
    assert entry.key == "model_params.down_channels" and entry.message.startswith("must be a positive multiple")
    assert str(entry) == f"model_params.down_channels[1] {entry.message}"


def test_unknown_keys_warn_not_die():
    data = tiny_config_dict()
    data["train_params"]["learning_rate"] = 0.1
    data["extras"] = {}
    cfg = Config.from_dict(data)
    assert any("train_params.learning_rate" in w for w in cfg.warnings)
    assert any("'extras'" in w for w in cfg.warnings)


def test_scientific_notation_text_is_a_number():
    data = tiny_config_dict(lr="1e-4")  # PyYAML reads 1e-4 as a string
    assert Config.from_dict(data).train_params.lr == 1e-4


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(
        f"!!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")
    assert not marker.exists()


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
