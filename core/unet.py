"""The tutorial's Stable-Diffusion-style UNet that predicts the noise in x_t.

Module and parameter names match the tutorial's exactly, so its state_dicts load as they are.
Two deliberate differences, neither of which changes the function computed: ``num_heads`` is
honoured (the tutorial always used 4), and attention runs through
``scaled_dot_product_attention`` (fused, no materialised attention map) unless the explicit
"naive" path is asked for, which benchmarks use as the tutorial's baseline.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import GROUPS, UNET_OUT_CHANNELS, ModelParams

AttentionImpl = Literal["sdpa", "naive"]


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, (B,) -> (B, dim), as in the tutorial."""
    half = dim // 2
    factor = 10000 ** (torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() / factor
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels with ``nn.MultiheadAttention``'s parameter layout."""

    def __init__(self, channels: int, num_heads: int, impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.impl = impl
        self.in_proj_weight = nn.Parameter(torch.empty(3 * channels, channels))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * channels))
        self.out_proj = nn.Linear(channels, channels)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N, C)."""
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax(q @ k.transpose(-2, -1) * (c // self.num_heads) ** -0.5, dim=-1)
            out = weights @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that leaves reduced-precision activations in their dtype under CUDA autocast.

    CUDA autocast runs group_norm in float32, so each norm in a bf16 network writes an fp32 copy
    of its input and the next layer casts it back: two extra kernels per norm in a network that
    is launch-bound at these sizes (an H200 step of the tutorial's config took 50.8 ms that way
    and 43.7 ms this way). The kernel accumulates in fp32 either way; only its output is rounded
    to bf16, like every other layer's. CPU autocast already keeps bf16 here (its kernel takes
    fp32 affine parameters), so the CPU runs the stock module.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype or x.device.type == "cpu":
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def _norm_act_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(GroupNorm(GROUPS, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))


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
        self.resnet_conv_first = nn.ModuleList(_norm_act_conv(c, cout) for c in ins)
        self.t_emb_layers = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(t_emb_dim, cout)) for _ in ins
        )
        self.resnet_conv_second = nn.ModuleList(_norm_act_conv(cout, cout) for _ in ins)
        self.attention_norms = nn.ModuleList(GroupNorm(GROUPS, cout) for _ in range(num_attentions))
        self.attentions = nn.ModuleList(SelfAttention(cout, num_heads, impl) for _ in range(num_attentions))
        self.residual_input_conv = nn.ModuleList(nn.Conv2d(c, cout, 1) for c in ins)

    def resnet(self, i: int, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        out = self.resnet_conv_first[i](x)
        out = out + self.t_emb_layers[i](t_emb)[:, :, None, None]
        out = self.resnet_conv_second[i](out)
        return out + self.residual_input_conv[i](x)

    def attend(self, i: int, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.attention_norms[i](x).flatten(2).transpose(1, 2)
        out = self.attentions[i](tokens).transpose(1, 2).reshape(b, c, h, w)
        return x + out

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
    """eps_theta(x_t, t): (B, C, H, W) images and (B,) integer timesteps -> predicted noise."""

    def __init__(self, params: ModelParams, attention_impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        down, mid, t_dim = params.down_channels, params.mid_channels, params.time_emb_dim
        attn = params.attention_flags()
        heads = params.num_heads
        self.t_emb_dim = t_dim
        self.t_proj = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
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
        """Switch every attention layer between the fused and the explicit path."""
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.impl = impl

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(x.shape[0])
        t_emb = self.t_proj(time_embedding(t, self.t_emb_dim).to(x.dtype))
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
