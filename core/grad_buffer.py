"""Parameters' gradients in one buffer that lives as long as training, for CPU steps.

With torch's default, ``zero_grad(set_to_none=True)``, a step's first backward pass allocates
every parameter's gradient anew, one by one among the activations it is freeing, and they live
on through the next micro-batch's forward pass. glibc's heap cannot hand out the holes between
them for the larger activations, so it grows instead: a whole ``ddpm train`` process (tutorial
config, batch 64 in parts of 32, 2 AVX2 cores) peaked at 1.45-1.48 GiB that way and at
1.36-1.39 GiB with its gradients in this buffer, which is mapped by itself outside the heap.
Moving Adam's moments into flat buffers as well gained nothing: they are made once, after
the first step's activations are gone.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class GradBuffer:
    """Each parameter's ``.grad`` is a view of one zeroed buffer, shaped and strided like the
    parameter, so backward passes add into it in place (the same sums as torch's own
    accumulation). A parameter that no backward pass reached since :meth:`zero` gets ``None``
    back from :meth:`settle`, as torch would leave it, so the optimizer skips it as before.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self._params = [p for p in params if p.requires_grad]
        first = self._params[0]
        self._buffer = torch.zeros(sum(p.numel() for p in self._params), dtype=first.dtype, device=first.device)
        self._views = _views_like(self._buffer, self._params)
        self._reached: set[int] = set()
        for i, p in enumerate(self._params):
            p.register_post_accumulate_grad_hook(lambda _, i=i: self._reached.add(i))

    def zero(self) -> None:
        """Zero every gradient before a step (in place of ``optimizer.zero_grad()``)."""
        self._buffer.zero_()
        self._reached.clear()
        for p, view in zip(self._params, self._views):
            p.grad = view

    def settle(self) -> None:
        """After a step's backward passes: ``None`` for the gradients none of them reached."""
        for i, p in enumerate(self._params):
            if i not in self._reached:
                p.grad = None


def applies(params: Sequence[torch.nn.Parameter]) -> bool:
    """Whether :class:`GradBuffer` can hold these parameters' gradients: one dtype, on the CPU."""
    trained = [p for p in params if p.requires_grad]
    return bool(trained) and all(p.device.type == "cpu" and p.dtype == trained[0].dtype for p in trained)


def _views_like(buffer: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive pieces of ``buffer``, each with its parameter's shape and strides where the
    parameter is dense in its own order (contiguous or channels-last, as parameters are), so
    that adding its gradient in is a straight pass."""
    views, offset = [], 0
    for p in params:
        piece = buffer[offset:offset + p.numel()]
        dense = p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last))
        views.append(piece.as_strided(p.shape, p.stride()) if dense else piece.view(p.shape))
        offset += p.numel()
    return views
