"""Class-conditional training and classifier-free guidance: the model, labels, guidance, files, CLI."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

from core import trainer as tr
from core.checkpoint import load_for_sampling, read_training_state
from core.classes import class_indices, class_rows, conditioning_classes
from core.cli import main
from core.config import Config, load_config
from core.data import load_dataset
from core.errors import CheckpointError, DatasetError, UserError
from core.denoiser import EpsDenoiser
from core.guidance import check_request, guided
from core.runs import RunDir
from core.samplers import generate
from core.schedule import NoiseSchedule
from core.unet import UNet

from .conftest import tiny_config_dict

NAMES = ["cat", "dog", "owl"]


def _cond_dict(**train) -> dict:
    d = tiny_config_dict(**train)
    d["model_params"]["class_conditional"] = True
    return d


def _cond_config(**train) -> Config:
    return Config.from_dict(_cond_dict(**train))


class LabelledImages:
    """Random images with labels and class names, as the trainer reads a loaded dataset."""

    def __init__(self, names: list[str] = NAMES, n: int = 30, size: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand((n, 1, size, size), generator=g) * 2 - 1
        self.labels = torch.arange(n) % len(names)
        self.class_names = list(names)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


# -- the model -------------------------------------------------------------------------------------


def test_absent_switch_is_the_unconditional_model(fixtures_dir):
    cfg = load_config(fixtures_dir / "unet_tiny_gray16.yaml")
    assert cfg.model_params.class_conditional is False and cfg.train_params.cond_drop_prob == 0.1
    model = UNet(cfg.model_params)
    assert model.num_classes == 0 and not any(k.startswith("class_emb") for k in model.state_dict())
    with pytest.raises(ValueError, match="without classes"):
        model(torch.zeros(1, 1, 16, 16), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))


def test_conditional_model_has_a_no_class_row_and_uses_the_label():
    model = UNet(_cond_config().model_params, class_names=NAMES).eval()
    extra = set(model.state_dict()) - set(UNet(Config.from_dict(tiny_config_dict()).model_params).state_dict())
    assert extra == {"class_emb.weight"}
    assert model.class_emb.weight.shape == (len(NAMES) + 1, 32) and model.null_class == 3
    x, t = torch.randn(3, 1, 16, 16), torch.full((3,), 50)
    with torch.no_grad():
        by_class = model(x, t, torch.tensor([0, 1, 2]))
        without = model(x, t)
        null = model(x, t, torch.full((3,), model.null_class))
    torch.testing.assert_close(without, null)
    assert not torch.allclose(by_class, null)
    with pytest.raises(ValueError):
        UNet(_cond_config().model_params)  # a conditional model needs its class names


# -- labels ----------------------------------------------------------------------------------------


def test_label_dropout_rate():
    labels = torch.arange(200_000) % 10
    dropped = tr.drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(1))
    hidden = dropped == 10
    assert abs(hidden.float().mean().item() - 0.1) < 0.003  # 0.1 +- 4.5 sigma
    assert torch.equal(dropped[~hidden], labels[~hidden])
    assert torch.equal(tr.drop_labels(labels, 0.0, 10, torch.Generator()), labels)


@pytest.mark.slow
def test_trainer_hides_labels_at_the_configured_rate(tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    forward = UNet.forward

    def spy(self, x, t, y=None):
        if self.training:
            seen.append(y.clone())
        return forward(self, x, t, y)

    monkeypatch.setattr(UNet, "forward", spy)
    trainer = tr.Trainer(_cond_config(max_steps=10, batch_size=30, cond_drop_prob=0.5), tmp_path / "r",
                         dataset=LabelledImages())
    trainer.run()
    y = torch.cat(seen)
    assert len(y) == 10 * 30
    assert 0.4 < (y == 3).float().mean().item() < 0.6  # 0.5 +- 3.4 sigma
    assert set(y.tolist()) == {0, 1, 2, 3}


def _folder(root, layout: dict[str, int]):
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("L", (8, 8), 40 * i).save(root / sub / f"{i}.png")
    return root


@pytest.mark.parametrize("layout, message", [
    ({"": 3}, "has no classes"),
    ({"cats": 3}, r"has one class \('cats'\)"),
    ({"": 2, "cats": 3, "dogs": 3}, "2 images lie directly in"),
])
def test_datasets_without_classes_are_refused(tmp_path, layout, message):
    dataset = load_dataset(_folder(tmp_path / "d", layout), 1, 8)
    with pytest.raises(DatasetError, match=message) as e:
        conditioning_classes(dataset)
    assert "class_conditional" in str(e.value)


def test_idx_labels_give_class_names():
    assert conditioning_classes(load_dataset("builtin:fashion-mnist", 1, 8))[:2] == ["T-shirt/top", "Trouser"]


def test_conditional_trainer_refuses_loose_images_before_training(tmp_path):
    folder = _folder(tmp_path / "loose", {"": 4})
    cfg = _cond_config()
    with pytest.raises(DatasetError, match="has no classes"):
        tr.Trainer(cfg.replace("dataset_params", im_path=str(folder)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- files -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_class_names_in_run_folder_and_every_checkpoint(tmp_path):
    events: list = []
    trainer = tr.Trainer(_cond_config(max_steps=6, sample_every_steps=6), tmp_path / "r",
                         dataset=LabelledImages(), on_event=events.append)
    trainer.run()
    previews = [e.images.shape[0] for e in events if isinstance(e, tr.PreviewReady)]
    assert previews and set(previews) == {tr.PREVIEW_IMAGES}  # guided previews, one class after another
    run = RunDir(tmp_path / "r")
    assert json.loads(run.classes_path.read_text()) == NAMES
    files = [p for _, p in run.list_checkpoints()] + [run.weights_path(trainer.config)]
    assert len(files) == 3
    for path in files:
        with safe_open(path, "pt") as f:
            assert json.loads(f.metadata()["class_names"]) == NAMES
    assert read_training_state(files[0]).class_names == NAMES
    for source in (run.path, files[-1]):
        model, _ = load_for_sampling(source)
        assert model.class_names == NAMES
        torch.testing.assert_close(model.class_emb.weight, trainer.ema_model.class_emb.weight)


@pytest.mark.slow
def test_unconditional_files_record_no_classes(tmp_path):
    trainer = tr.Trainer(Config.from_dict(tiny_config_dict(max_steps=2)), tmp_path / "r",
                         dataset=LabelledImages())
    trainer.run()
    run = RunDir(tmp_path / "r")
    assert not run.classes_path.exists()
    with safe_open(run.latest_checkpoint(), "pt") as f:
        assert "class_names" not in f.metadata()
    assert load_for_sampling(run.path)[0].class_names == []


@pytest.mark.slow
def test_resume_refuses_other_classes(tmp_path):
    tr.Trainer(_cond_config(max_steps=5), tmp_path / "r", dataset=LabelledImages()).run()
    resumed = tr.Trainer(_cond_config(max_steps=10), tmp_path / "r", dataset=LabelledImages(), resume=True)
    assert resumed.run().step == 10
    other = tr.Trainer(_cond_config(max_steps=15), tmp_path / "r", resume=True,
                       dataset=LabelledImages(["cat", "dog", "emu"]))
    with pytest.raises(CheckpointError, match="learned the classes cat, dog, owl"):
        other.run()


# -- guidance --------------------------------------------------------------------------------------


class ToyConditional(torch.nn.Module):
    """eps depends on x, t and the class in a known way; counts calls and batch sizes."""

    null_class = 2

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.tensor([0.3, -0.5, 0.1], dtype=torch.float64))
        self.calls: list[int] = []

    def forward(self, x, t, y):
        self.calls.append(len(x))
        return 0.5 * x + 1e-3 * t.view(-1, 1, 1, 1) + self.shift[y].view(-1, 1, 1, 1).to(x.dtype)


SCHEDULE = NoiseSchedule(50)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 4.0])
def test_guided_eps_is_the_formula_in_one_forward(w):
    model = ToyConditional()
    labels = torch.tensor([0, 1, 0])
    x, t = torch.randn(3, 1, 2, 2, dtype=torch.float64), 7
    eps = EpsDenoiser(model, SCHEDULE, labels=labels, guidance=w)(x, t).eps
    tt = torch.full((3,), t)
    cond, uncond = model(x, tt, labels), model(x, tt, torch.full_like(labels, 2))
    torch.testing.assert_close(eps, (uncond + w * (cond - uncond)).float())
    assert model.calls[0] == (6 if w not in (0.0, 1.0) else 3)  # both branches in one batch
    assert len(model.calls) == 3  # that one call, then the two above
    torch.testing.assert_close(guided(model, x, tt, labels, 2, w), uncond + w * (cond - uncond))


class FormulaModel(torch.nn.Module):
    """The guided eps of ToyConditional written out by hand, for fixed labels."""

    def __init__(self, toy: ToyConditional, labels: torch.Tensor, w: float) -> None:
        super().__init__()
        self.toy, self.labels, self.w = toy, labels, w

    def forward(self, x, t):
        cond = self.toy(x, t, self.labels)
        uncond = self.toy(x, t, torch.full_like(self.labels, 2))
        return uncond + self.w * (cond - uncond)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_every_sampler_samples_the_guided_eps(sampler):
    toy, labels = ToyConditional(), torch.tensor([0, 1, 1, 0])
    run = lambda denoiser: generate(denoiser, num_images=4, image_shape=(1, 2, 2), sampler=sampler, steps=10, seed=3)
    by_guidance = run(EpsDenoiser(toy, SCHEDULE, labels=labels, guidance=3.0))
    torch.testing.assert_close(by_guidance, run(EpsDenoiser(FormulaModel(toy, labels, 3.0), SCHEDULE)))
    assert not torch.allclose(by_guidance, run(EpsDenoiser(FormulaModel(toy, labels, 1.0), SCHEDULE)))


def test_sampling_arguments_are_checked():
    with pytest.raises(UserError, match="one class per image"):
        check_request(torch.tensor([0]), 4, 2.0)
    with pytest.raises(UserError, match="guidance must be 0"):
        check_request(torch.tensor([0]), 1, -1.0)


def test_class_requests():
    assert class_indices(["dog", "cat"], NAMES) == [1, 0]
    assert class_indices(["all"], NAMES) == [0, 1, 2]
    with pytest.raises(UserError, match="unknown class 'emu'; this model's classes are: cat, dog, owl"):
        class_indices(["emu"], NAMES)
    with pytest.raises(UserError, match="trained without classes"):
        class_indices(["cat"], [])
    labels, nrow = class_rows([2, 0], 5)
    assert nrow == 3 and labels.tolist() == [2, 2, 2, 0, 0, 0]
    labels, nrow = class_rows([1], 9)
    assert nrow == 3 and labels.tolist() == [1] * 9


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    data = _folder(root / "data", {"cat": 4, "dog": 4, "owl": 4})
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(_cond_dict(checkpoint_every_steps=4)))
    assert main(["train", str(config), "--data", str(data), "--run-dir", str(root / "run"), "--max-steps", "3"]) == 0
    return root / "run"


@pytest.mark.slow
def test_cli_samples_one_row_per_class(cond_run, tmp_path):
    grid, images = tmp_path / "g.png", tmp_path / "imgs"
    assert main(["sample", str(cond_run), "--class", "all", "--num", "6", "--guidance", "3",
                 "--sampler", "ddim", "--steps", "3", "--grid", str(grid), "--images", str(images)]) == 0
    width, height = Image.open(grid).size
    assert height == 3 * 18 + 2 and width > 2 * 18 + 2  # 3 rows of 2, and the row labels
    assert len(list(images.iterdir())) == 6
    assert main(["sample", str(cond_run), "--class", "owl", "--class", "cat", "--num", "2",
                 "--sampler", "ddim", "--steps", "2", "--grid", str(grid)]) == 0
    assert Image.open(grid).size[1] == 2 * 18 + 2


@pytest.mark.parametrize("argv, message", [
    (["--class", "emu"], "unknown class 'emu'; this model's classes are: cat, dog, owl"),
    (["--guidance", "2"], "--guidance needs --class"),
    (["--class", "cat", "--guidance", "-1"], "guidance must be 0"),
])
def test_cli_class_errors_exit_2(cond_run, argv, message, capsys):
    assert main(["sample", str(cond_run), "--steps", "2", "--sampler", "ddim", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_grid_row_labels_sit_left_of_their_rows():
    from core.exports import to_uint8_grid, with_row_labels

    images = -torch.ones(4, 1, 16, 16)  # black images: any bright pixel is label text
    grid = to_uint8_grid(images, 2)
    labelled = with_row_labels(grid, ["cat", "a much longer name"], 16)
    assert labelled.shape[0] == grid.shape[0] and labelled.shape[1] > grid.shape[1]
    np_ = labelled[..., 0]
    strip = np_[:, : labelled.shape[1] - grid.shape[1]]
    rows = strip.max(axis=1) > 0
    assert rows[2:18].any() and rows[20:36].any()  # text in both rows
    assert (strip[:, :].max(axis=0) > 0).sum() > 40  # the long label is wide
    assert (labelled[:, strip.shape[1]:] == grid).all()


def test_cli_unconditional_run_given_a_class(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict()))
    data = _folder(tmp_path / "data", {"cat": 4, "dog": 4})
    assert main(["train", str(config), "--data", str(data), "--run-dir", str(tmp_path / "run"), "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--class", "cat", "--steps", "2", "--sampler", "ddim"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained without classes" in err[0] and str(tmp_path / "run") in err[0]


def test_cli_conditional_train_on_loose_images_exit_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_cond_dict()))
    data = _folder(tmp_path / "data", {"": 3})
    assert main(["train", str(config), "--data", str(data), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conditional training needs" in err[0]
