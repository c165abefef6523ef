"""The UNet is the tutorial's function: same parameters, same outputs for the same weights."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from core import norm_act
from core.config import Config, load_config
from core.presets import list_presets, load_preset
from core.unet import GroupNorm, NormActConv, UNet, count_parameters


def test_tutorial_default_parameter_count_and_keys(fixtures_dir):
    model = UNet(Config().model_params)
    assert count_parameters(model) == 10_188_081
    lines = (fixtures_dir / "tutorial_default_state_keys.txt").read_text().splitlines()
    expected = {}
    for line in lines:
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            expected[key] = tuple(int(s) for s in shape.strip("(),").split(",") if s.strip())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


@pytest.mark.parametrize("name", ["tiny_gray16", "small_rgb32"])
@pytest.mark.parametrize("impl", ["chunked", "sdpa", "naive", "tutorial"])
def test_reproduces_tutorial_outputs(fixtures_dir, name, impl):
    cfg = load_config(fixtures_dir / f"unet_{name}.yaml")
    model = UNet(cfg.model_params, attention_impl=impl).eval()
    model.load_state_dict(load_file(fixtures_dir / f"unet_{name}.safetensors"))
    io = load_file(fixtures_dir / f"unet_{name}_io.safetensors")
    with torch.no_grad():
        eps = model(io["x"], io["t"])
    torch.testing.assert_close(eps, io["eps"], rtol=1e-5, atol=1e-5)


def test_channels_last_same_function(fixtures_dir):
    cfg = load_config(fixtures_dir / "unet_small_rgb32.yaml")
    model = UNet(cfg.model_params).eval()
    model.load_state_dict(load_file(fixtures_dir / "unet_small_rgb32.safetensors"))
    io = load_file(fixtures_dir / "unet_small_rgb32_io.safetensors")
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        eps = model(io["x"].contiguous(memory_format=torch.channels_last), io["t"])
    torch.testing.assert_close(eps, io["eps"], rtol=1e-5, atol=1e-5)


def test_num_heads_is_honoured(tiny_config):
    m = tiny_config.model_params
    model = UNet(m)
    heads = {a.num_heads for a in model.modules() if a.__class__.__name__ == "SelfAttention"}
    assert heads == {m.num_heads}


def test_attention_only_where_asked(tiny_config):
    model = UNet(tiny_config.model_params)
    assert len(model.downs[0].attentions) == 0 and len(model.downs[1].attentions) == 1
    assert len(model.ups[0].attentions) == 1 and len(model.ups[1].attentions) == 0
    x = torch.randn(2, 1, 16, 16)
    assert model(x, torch.tensor([0, 99])).shape == x.shape


def test_narrow_group_norm_in_fp32_has_the_reference_gradients():
    """The CPU's bf16 channels-last path for narrow groups (fp32 inside, input kept as it came)
    gives what autograd gives through an explicit fp32 cast, up to the bf16 rounding of outputs."""
    torch.manual_seed(0)
    norm = GroupNorm(8, 32)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(4, 32, 6, 6).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(4, 32, 6, 6)
    out = norm(x)
    assert out.dtype == torch.bfloat16 and out.grad_fn.name() == "_Fp32GroupNormBackward"
    got = torch.autograd.grad(out, (x, norm.weight, norm.bias), grad.bfloat16())
    ref_out = F.group_norm(x.float(), 8, norm.weight, norm.bias)
    want = torch.autograd.grad(ref_out, (x, norm.weight, norm.bias), grad.bfloat16().float())
    torch.testing.assert_close(out.float(), ref_out, rtol=1e-2, atol=1e-2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not norm_act.available(), reason="no norm_act kernels for this platform or CPU")
def test_channels_last_fp32_group_norm_runs_the_fused_kernel_with_torchs_gradients():
    """The norm before attention, fp32 channels-last: core.norm_act's kernel without the SiLU."""
    torch.manual_seed(0)
    norm = GroupNorm(8, 32)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(4, 32, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(4, 32, 6, 6)
    out = norm(x)
    assert out.grad_fn.name() == "_ChannelsLastGroupNormBackward"
    ref_out = F.group_norm(x, 8, norm.weight, norm.bias)
    torch.testing.assert_close(out, ref_out)
    got = torch.autograd.grad(out, (x, norm.weight, norm.bias), grad)
    want = torch.autograd.grad(ref_out, (x, norm.weight, norm.bias), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("channels_last", [False, True])
def test_norm_act_conv_keeps_one_activation_and_gives_autograds_gradients(channels_last):
    """fp32 training on the CPU keeps the norm's input only, and its outputs and gradients are
    those of autograd through the three layers: bit for bit in NCHW memory, within fp32 rounding
    in channels-last memory, where the norm and the SiLU are core.norm_act's fused kernels."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layer = NormActConv(16, 32).to(memory_format=fmt)
    x = torch.randn(3, 16, 10, 10).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(3, 32, 10, 10)
    inputs = (x, *layer.parameters())
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    activations = [t for t in saved if t.shape == x.shape]  # autograd through the three keeps 3
    assert out.grad_fn.name() == "_NormActConvBackward" and len(activations) == 1
    want_out = torch.nn.Sequential.forward(layer, x)
    fused = channels_last and norm_act.available()
    same = functools.partial(torch.allclose, rtol=1e-4, atol=1e-5) if fused else torch.equal
    assert same(out, want_out)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(want_out, inputs, grad)):
        assert same(got, want)


def test_norm_act_conv_runs_as_the_tutorials_layers_under_autocast():
    layer = NormActConv(16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(1, 16, 4, 4))
    assert out.grad_fn.name() != "_NormActConvBackward"


@pytest.mark.parametrize("preset", [p.name for p in list_presets()])
def test_every_shipped_preset_builds_a_model_for_its_image_size(preset):
    """A preset whose channel lists do not chain would fail only when a user presses Train."""
    params = load_preset(preset).model_params
    model = UNet(params).eval()
    x = torch.randn(2, params.im_channels, params.im_size, params.im_size)
    with torch.no_grad():
        assert model(x, torch.tensor([0, 999])).shape == x.shape
