"""The tutorial's Stable-Diffusion-style UNet that predicts the noise in x_t.

Module and parameter names match the tutorial's exactly, so its state_dicts load as they are.
Two deliberate differences, neither of which changes the function computed: ``num_heads`` is
honoured (the tutorial always used 4), and attention runs the fastest exact kernel for the
device (:mod:`core.attention`) unless ``attention_impl="tutorial"`` asks for torch's own
``nn.MultiheadAttention`` forward, which the benchmarks use as the tutorial's baseline.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import matmul, norm_act, winograd
from .attention import AttentionImpl, output_projection, projected_self_attention
from .config import GROUPS, UNET_OUT_CHANNELS, ModelParams


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, (B,) -> (B, dim), as in the tutorial."""
    half = dim // 2
    factor = 10000 ** (torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() / factor
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class SelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention over pixels: the tutorial's ``nn.MultiheadAttention`` (the same
    parameters, names and initialisation), with the attention itself run by ``impl``'s kernel.

    ``impl="tutorial"`` runs torch's own ``forward`` as the tutorial calls it: with
    ``need_weights=True``, the default, it also averages the attention map over the heads and
    returns it, and the tutorial throws it away. The benchmarks' baseline is this path.
    """

    def __init__(self, channels: int, num_heads: int, impl: AttentionImpl = "auto") -> None:
        super().__init__(channels, num_heads, batch_first=True)
        self.impl = impl

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """(B, N, C) tokens -> (B, N, C), plus ``residual`` (B, N, C) where given."""
        if self.impl == "tutorial":
            out = super().forward(x, x, x)[0]
            return out if residual is None else out + residual
        values = projected_self_attention(x, self.in_proj_weight, self.in_proj_bias, self.num_heads, self.impl)
        return output_projection(values, self.out_proj.weight, self.out_proj.bias, self.impl, residual)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` run by whichever kernel is fast for bf16 activations on the device.

    CUDA autocast runs group_norm in float32, so each norm in a bf16 network writes an fp32 copy
    of its input and the next layer casts it back: two extra kernels per norm in a network that
    is launch-bound at these sizes (an H200 step of the tutorial's config took 50.8 ms that way
    and 43.7 ms this way). There it runs in bf16 with fp32 accumulation.

    The CPU's channels-last bf16 kernel is the opposite case: with fewer than 16 channels per
    group it is 4-20x slower than the fp32 one (forward+backward at batch 64 on 2 Zen 4 cores:
    32 channels at 28x28 9.1 ms in bf16, 2.2 ms through fp32; 128 channels at 14x14 0.6 ms
    against 1.5 ms), so narrow groups go through :class:`_Fp32GroupNorm`. Either way only the
    output is rounded to bf16, like every other layer's. In fp32 the CPU's channels-last kernel
    is 2-7x slower than its NCHW one, and :mod:`core.norm_act`'s kernel (without its SiLU) runs
    such norms instead (:class:`_ChannelsLastGroupNorm`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            if norm_act.applies(x) and not torch.is_autocast_enabled("cpu"):
                return _ChannelsLastGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
            return super().forward(x)
        if x.device.type == "cpu":
            narrow = self.num_channels // self.num_groups < 16
            if narrow and x.is_contiguous(memory_format=torch.channels_last):
                return _Fp32GroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class _Fp32GroupNorm(torch.autograd.Function):
    """Group norm of a reduced-precision input computed in fp32, keeping the input as it came.

    Autograd through ``x.float()`` would keep the fp32 copy for the backward pass, twice the
    bytes of the input, which the previous layer usually keeps already; the copy is remade in
    the backward pass instead (one cast).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                eps: float) -> torch.Tensor:
        y, mean, rstd = _group_norm(x.float(), weight, bias, groups, eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.groups = groups
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, mean, rstd, weight = ctx.saved_tensors
        dx, dw, db = _group_norm_backward(grad.float(), x.float(), mean, rstd, weight, ctx.groups,
                                          ctx.needs_input_grad[:3])
        return (dx.to(x.dtype) if dx is not None else None), dw, db, None, None


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """Group norm of channels-last fp32 activations by :mod:`core.norm_act`, keeping its input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                eps: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.groups, ctx.eps = groups, eps
        return norm_act.forward(x, weight, bias, groups, eps, silu=False)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias = ctx.saved_tensors
        return *norm_act.backward(x, weight, bias, grad, ctx.groups, ctx.eps, silu=False), None, None


class NormActConv(nn.Sequential):
    """GroupNorm, SiLU, 3x3 conv: the tutorial's ``nn.Sequential`` (the same ``0.*``/``2.*``
    keys), which fp32 training on the CPU runs through :class:`_NormActConv`. With ``winograd``
    set (:meth:`UNet.set_winograd`) the conv is :mod:`core.winograd`'s where that applies."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(GroupNorm(GROUPS, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.winograd = False
        self._sampling_weights = winograd.WeightCache()

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None,  # type: ignore[override]
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output plus ``shift`` (B, C_out) per image and channel (a ResNet's time
        embedding) and ``residual`` (shaped like the output); Winograd adds them as it writes."""
        norm, _, conv = self
        if (x.device.type == "cpu" and x.dtype == conv.weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu")):
            if torch.is_grad_enabled():
                out = _NormActConv.apply(x, norm.weight, norm.bias, conv.weight, conv.bias, norm.num_groups,
                                         norm.eps, self.winograd)
                return _added(out, shift, residual)
            if norm_act.applies(x):
                act = norm_act.forward(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
                if self.winograd and winograd.applies(act, conv.weight):
                    bias = conv.bias if shift is None else shift + conv.bias
                    tile = winograd.sampling_tile(*act.shape[2:])
                    return winograd.conv3x3(act, self._sampling_weights.get(conv.weight, tile), bias, residual)
                return _added(conv(act), shift, residual)
        return _added(super().forward(x), shift, residual)


def _added(out: torch.Tensor, shift: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    """The shift and residual added after the layer, where Winograd did not add them as it wrote
    (in the order the tutorial's ResNet adds them)."""
    if shift is not None:
        out = out + shift[:, :, None, None]
    return out if residual is None else out + residual


class _NormActConv(torch.autograd.Function):
    """GroupNorm, SiLU and conv that keep only the norm's input for the backward pass.

    Autograd through the three keeps three activations of the same size: the norm's input, the
    SiLU's (the norm's output) and the conv's (the SiLU's output). The two middle ones are
    remade in the backward pass from the first, one norm and one SiLU per layer: in fp32 the
    tutorial's network keeps 0.23 GiB of activations per 16 images, of which this leaves out
    about half, and the CPU's fp32 training runs in parts of 16 or 32 images to fit in a quarter
    of the tutorial step's memory (docs/speed.md, "Memory of the whole process"). The kernels are
    autograd's own, so the results are the same; on channels-last activations the norm and the
    SiLU are :mod:`core.norm_act`'s fused kernels instead (torch's channels-last norm is slow).
    With ``use_winograd`` the conv and the input's gradient (the transposed conv) are
    :mod:`core.winograd`'s where it applies, and so is the weights' gradient on images of 2x2
    and larger (:func:`core.winograd.weight_grad_applies`).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, groups: int, eps: float, use_winograd: bool = False) -> torch.Tensor:
        ctx.save_for_backward(x, gamma, beta, weight)
        ctx.groups, ctx.eps, ctx.has_bias, ctx.winograd = groups, eps, bias is not None, use_winograd
        act = _norm_silu(x, gamma, beta, groups, eps)
        if use_winograd and winograd.applies(act, weight):
            return winograd.conv3x3(act, winograd.transform_weight(weight), bias,
                                    round_bytes=winograd.TRAINING_ROUND_BYTES)
        return F.conv2d(act, weight, bias, padding=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, gamma, beta, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        fused = norm_act.applies(x)
        if fused:
            act = norm_act.forward(x, gamma, beta, ctx.groups, ctx.eps)
        else:
            y, mean, rstd = _group_norm(x, gamma, beta, ctx.groups, ctx.eps)
            act = F.silu(y)
        # the input's gradient is the transposed convolution of grad, which Winograd can compute too,
        # and the weights' gradient as well
        transposed = ctx.winograd and winograd.applies(grad, weight.transpose(0, 1))
        tiled_weights = ctx.winograd and needs[3] and winograd.weight_grad_applies(act, weight)
        if tiled_weights and transposed:
            grad_act = None
            grad_weight = winograd.weight_grad(act, grad)
            grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias and needs[4] else None
        else:
            grad_act, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad, act, weight, [weight.shape[0]] if ctx.has_bias else None,
                [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [not transposed, needs[3], needs[4]],
            )
        if transposed:
            grad_act = winograd.conv3x3(grad, winograd.transform_weight(weight, transposed=True),
                                        round_bytes=winograd.TRAINING_ROUND_BYTES)
        if fused:
            grad_x, grad_gamma, grad_beta = norm_act.backward(x, gamma, beta, grad_act, ctx.groups, ctx.eps)
        else:
            grad_y = torch.ops.aten.silu_backward(grad_act, y)
            grad_x, grad_gamma, grad_beta = _group_norm_backward(grad_y, x, mean, rstd, gamma, ctx.groups,
                                                                 needs[:3])
        return grad_x, grad_gamma, grad_beta, grad_weight, grad_bias, None, None, None


def _norm_silu(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """SiLU of the group norm: :mod:`core.norm_act`'s fused kernel where it applies, else torch's."""
    if norm_act.applies(x):
        return norm_act.forward(x, gamma, beta, groups, eps)
    return F.silu(_group_norm(x, gamma, beta, groups, eps)[0])


def _group_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, mean, rstd) of the group norm, as autograd's own kernel computes them."""
    n, c = x.shape[:2]
    return torch.native_group_norm(x, gamma, beta, n, c, x[0, 0].numel(), groups, eps)


def _group_norm_backward(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                         gamma: torch.Tensor, groups: int,
                         needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
    """Gradients for (x, gamma, beta) of :func:`_group_norm`, those ``needs`` asks for."""
    n, c = x.shape[:2]
    return torch.ops.aten.native_group_norm_backward(grad, x, mean, rstd, gamma, n, c, x[0, 0].numel(), groups,
                                                      list(needs))


class PointwiseConv(nn.Conv2d):
    """A ResNet's 1x1 convolution of its input: ``nn.Conv2d``'s parameters, names and
    initialisation; in sampling, on channels-last images, :func:`core.matmul.pointwise`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if matmul.pointwise_applies(x):
            return matmul.pointwise(x, self.weight, self.bias)
        return super().forward(x)


class ResAttnStack(nn.Module):
    """ResNet layers, each optionally followed by self-attention: the body shared by all blocks.

    ``num_resnets`` ResNets and ``num_attentions`` attentions; when ``attention_first`` is false
    (down and up blocks) layer i is ResNet i then attention i; when true (mid blocks) it is
    ResNet 0, then [attention i, ResNet i+1] for each i, as in the tutorial's MidBlock.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        t_emb_dim: int,
        num_resnets: int,
        num_attentions: int,
        num_heads: int,
        impl: AttentionImpl,
    ) -> None:
        super().__init__()
        ins = [cin] + [cout] * (num_resnets - 1)
        self.resnet_conv_first = nn.ModuleList(NormActConv(c, cout) for c in ins)
        self.t_emb_layers = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(t_emb_dim, cout)) for _ in ins
        )
        self.resnet_conv_second = nn.ModuleList(NormActConv(cout, cout) for _ in ins)
        self.attention_norms = nn.ModuleList(GroupNorm(GROUPS, cout) for _ in range(num_attentions))
        self.attentions = nn.ModuleList(SelfAttention(cout, num_heads, impl) for _ in range(num_attentions))
        self.residual_input_conv = nn.ModuleList(PointwiseConv(c, cout) for c in ins)

    def resnet(self, i: int, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        out = self.resnet_conv_first[i](x, shift=self.t_emb_layers[i](t_emb))
        return self.resnet_conv_second[i](out, residual=self.residual_input_conv[i](x))

    def attend(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus attention i over its normed pixels; the attention adds ``x`` as it writes
        its output projection."""
        b, c, h, w = x.shape
        tokens = self.attention_norms[i](x).flatten(2).transpose(1, 2)
        return self.attentions[i](tokens, residual=x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)

    def run_layers(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """Down/up order: ResNet i, then attention i when this block attends."""
        for i in range(len(self.resnet_conv_first)):
            x = self.resnet(i, x, t_emb)
            if len(self.attentions):
                x = self.attend(i, x)
        return x


class DownBlock(ResAttnStack):
    """ResNet(+attention) layers, then a stride-2 4x4 conv when the block downsamples."""

    def __init__(self, cin: int, cout: int, t_emb_dim: int, down_sample: bool, num_layers: int,
                 num_heads: int, attention: bool, impl: AttentionImpl) -> None:
        super().__init__(cin, cout, t_emb_dim, num_layers, num_layers if attention else 0, num_heads, impl)
        self.down_sample_conv = nn.Conv2d(cout, cout, 4, 2, 1) if down_sample else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return self.down_sample_conv(self.run_layers(x, t_emb))


class MidBlock(ResAttnStack):
    """ResNet, then [attention, ResNet] x num_layers, at the lowest resolution."""

    def __init__(self, cin: int, cout: int, t_emb_dim: int, num_layers: int, num_heads: int,
                 impl: AttentionImpl) -> None:
        super().__init__(cin, cout, t_emb_dim, num_layers + 1, num_layers, num_heads, impl)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        x = self.resnet(0, x, t_emb)
        for i in range(len(self.attentions)):
            x = self.resnet(i + 1, self.attend(i, x), t_emb)
        return x


class UpBlock(ResAttnStack):
    """Transposed-conv upsample, concatenate the skip, then ResNet(+attention) layers."""

    def __init__(self, cin: int, cout: int, t_emb_dim: int, up_sample: bool, num_layers: int,
                 num_heads: int, attention: bool, impl: AttentionImpl) -> None:
        super().__init__(cin, cout, t_emb_dim, num_layers, num_layers if attention else 0, num_heads, impl)
        half = cin // 2
        self.up_sample_conv = nn.ConvTranspose2d(half, half, 4, 2, 1) if up_sample else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up_sample_conv(x), skip], dim=1)
        return self.run_layers(x, t_emb)


class UNet(nn.Module):
    """eps_theta(x_t, t[, y]): (B, C, H, W) images, (B,) integer timesteps and, for a
    class-conditional model, (B,) class indices -> predicted noise.

    A class-conditional model (``params.class_conditional``) learns one embedding per class in
    ``class_names`` plus a last one, :attr:`null_class`, for "no class", added to the time
    embedding so that every ResNet layer sees it. Classifier-free guidance needs the "no class"
    row: it is what the model predicts unconditionally. An unconditional model has exactly the
    tutorial's parameters and ignores nothing: passing it ``y`` is an error.
    """

    def __init__(self, params: ModelParams, attention_impl: AttentionImpl = "auto",
                 class_names: Sequence[str] = ()) -> None:
        super().__init__()
        down, mid, t_dim = params.down_channels, params.mid_channels, params.time_emb_dim
        attn = params.attention_flags()
        heads = params.num_heads
        if params.class_conditional != bool(class_names):
            raise ValueError("class_names are given exactly when params.class_conditional is true")
        self.class_names = list(class_names)
        self.t_emb_dim = t_dim
        self.t_proj = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        if self.class_names:
            self.class_emb = nn.Embedding(len(self.class_names) + 1, t_dim)
        self.conv_in = nn.Conv2d(params.im_channels, down[0], 3, padding=1)
        self.downs = nn.ModuleList(
            DownBlock(down[i], down[i + 1], t_dim, params.down_sample[i], params.num_down_layers,
                      heads, attn[i], attention_impl)
            for i in range(len(down) - 1)
        )
        self.mids = nn.ModuleList(
            MidBlock(mid[i], mid[i + 1], t_dim, params.num_mid_layers, heads, attention_impl)
            for i in range(len(mid) - 1)
        )
        self.ups = nn.ModuleList(
            UpBlock(down[i] * 2, down[i - 1] if i else UNET_OUT_CHANNELS, t_dim, params.down_sample[i],
                    params.num_up_layers, heads, attn[i], attention_impl)
            for i in reversed(range(len(down) - 1))
        )
        self.norm_out = GroupNorm(GROUPS, UNET_OUT_CHANNELS)
        self.conv_out = nn.Conv2d(UNET_OUT_CHANNELS, params.im_channels, 3, padding=1)

    def set_attention_impl(self, impl: AttentionImpl) -> None:
        """Switch every attention layer to another kernel (core.autotune times them on the model)."""
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.impl = impl

    def set_winograd(self, on: bool) -> None:
        """Run the 3x3 convs that :mod:`core.winograd` takes through it, or all through torch
        (core.autotune times both on the model)."""
        for m in self.modules():
            if isinstance(m, NormActConv):
                m.winograd = on

    @property
    def num_classes(self) -> int:
        """Classes the model was trained on; 0 for an unconditional model."""
        return len(self.class_names)

    @property
    def null_class(self) -> int:
        """The class index that means "no class": the embedding's last row."""
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(x.shape[0])
        t_emb = self.t_proj(time_embedding(t, self.t_emb_dim).to(x.dtype))
        if self.class_names:
            if y is None:
                y = torch.full_like(t, self.null_class)
            t_emb = t_emb + self.class_emb(y.to(x.device).long().reshape(-1)).to(t_emb.dtype)
        elif y is not None:
            raise ValueError("this model was trained without classes; call it without y")
        out = self.conv_in(x)
        skips = []
        for down in self.downs:
            skips.append(out)
            out = down(out, t_emb)
        for mid in self.mids:
            out = mid(out, t_emb)
        for up in self.ups:
            out = up(out, skips.pop(), t_emb)
        return self.conv_out(F.silu(self.norm_out(out)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(params: ModelParams) -> int:
    """The parameter count of the UNet ``params`` describe, built on the meta device: no memory,
    milliseconds, so the config form can show it as the user types."""
    with torch.device("meta"):
        return count_parameters(UNet(params))
