"""Training's forward and backward passes replayed as CUDA graphs.

On a GPU the tutorial's network at batch 64 is bound by launching kernels, not by computing
them: a step is about a thousand small kernels, each queued by Python and the dispatcher, and an
H200 finishes each before the next is queued. A CUDA graph records the passes' kernels once and
queues them with one call, so the step costs what the GPU needs (see docs/speed.md).

:func:`torch.cuda.make_graphed_callables` records a module's forward and backward; a graph
holds fixed shapes, so :class:`GraphedNetwork` records one pair per input shape it meets, up to
:data:`MAX_SHAPES` (the run's batch, an epoch's short last batch), and runs any further shape
as it is. The replayed kernels are the eager ones: the same arithmetic, the same results.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .device import Precision

log = logging.getLogger(__name__)

MAX_SHAPES = 2
"""Graph pairs kept at most: each holds its own activation memory."""

_Key = tuple[tuple[int, ...], ...]


class _Call(torch.nn.Module):
    """The network as one module per recorded shape: recording patches the module it is given,
    and the network itself must stay plain for evaluation and checkpoints."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.net(*args)


class GraphedNetwork(torch.nn.Module):
    """``net`` in training, its forward and backward replayed as CUDA graphs.

    Each graph writes its gradients into buffers of its own, which ``param.grad`` then holds;
    the next replay overwrites them. So a step must run the network once, not in micro-batches
    whose gradients add up (:func:`use_graphs` says when that holds). A shape that fails to
    record runs eagerly from then on; the failure is logged once and kept in ``errors``.
    """

    def __init__(self, net: torch.nn.Module, precision: Precision) -> None:
        super().__init__()
        self.net = net
        self.precision = precision
        self._graphed: dict[_Key, Callable[..., torch.Tensor] | None] = {}
        self._weights: tuple[int, ...] = ()
        self.errors: list[str] = []

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if not (self.net.training and torch.is_grad_enabled()):
            return self.net(*args)
        graphed = self.graphed_for(args)
        return graphed(*args) if graphed is not None else self.net(*args)

    def graphed_for(self, args: tuple[torch.Tensor, ...]) -> Callable[..., torch.Tensor] | None:
        """The recorded call for ``args``' shapes, recorded now if need be; None: run eagerly.

        Recordings read the weights where they were: when they have moved (``model.to`` a
        new memory format, as autotune's candidates do in turn), every shape is recorded again.
        """
        weights = tuple(p.data_ptr() for p in self.net.parameters())
        if weights != self._weights:
            self._graphed.clear()
            self._weights = weights
        key = tuple(tuple(a.shape) + tuple(a.stride()) for a in args)
        if key not in self._graphed and len(self._graphed) < MAX_SHAPES:
            self._graphed[key] = self._record(args)
        return self._graphed.get(key)

    def _record(self, args: tuple[torch.Tensor, ...]) -> Callable[..., torch.Tensor] | None:
        """The graphed call for ``args``' shapes; None (run eagerly) where recording fails."""
        sample = tuple(a.detach().clone() for a in args)
        dtype = self.precision.dtype or torch.float32
        try:
            # autocast's weight cache would outlive the recording: graphs need it off
            with torch.autocast("cuda", dtype=dtype, enabled=self.precision.dtype is not None, cache_enabled=False):
                return torch.cuda.make_graphed_callables(_Call(self.net), sample, allow_unused_input=True)
        except Exception as e:  # noqa: BLE001 - any failure means: this shape runs eagerly
            self.errors.append(f"{type(e).__name__}: {e}"[:300])
            log.warning("CUDA graphs: recording for shapes %s failed (%s); running it eagerly",
                        [tuple(a.shape) for a in args], self.errors[-1])
            return None


def use_graphs(enabled: bool, device: torch.device, parts: int, world_size: int) -> bool:
    """Whether training replays graphs: asked for, on a CUDA device, one network pass per step
    (see :class:`GraphedNetwork`), and one process (DDP's gradient hooks run during backward)."""
    return enabled and device.type == "cuda" and parts == 1 and world_size == 1
