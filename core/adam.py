"""Adam for the CPU, without the 0.15 GiB that ``torch.optim`` costs there.

Building any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (``add_param_group`` is
wrapped by ``torch._disable_dynamo``, which imports it on first call): 151 MiB of resident
memory on this CPU build of torch 2.14, a tenth of the training step's whole memory budget
(1.3 GiB). This class makes the same calls as ``torch.optim.Adam(fused=True)`` with the app's
settings (no weight decay, amsgrad or maximize): one ``torch._fused_adam_``, a single pass over
each parameter's four tensors, so its steps equal torch's fused Adam bit for bit
(``tests/test_adam.py``), and its ``state_dict`` has torch's layout, so checkpoints move between
this and ``torch.optim.Adam`` both ways. The fused step took 1.3 against 3.9 ms for the
``fast-cpu`` network's 126 tensors (about 2 % of its training step) and 12 against 29 ms for the
tutorial's, on 2 AVX2 cores, where the foreach update makes seven calls per tensor.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# the hyperparameters torch.optim.Adam keeps in a param group, at the values this class runs with
_TORCH_GROUP_FLAGS = {
    "weight_decay": 0.0, "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
    "differentiable": False, "fused": True, "decoupled_weight_decay": False,
}


class Adam:
    """One param group; ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` as in torch."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param_groups: list[dict[str, Any]] = [{"params": list(params), "lr": lr, "betas": betas, "eps": eps}]
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}

    @property
    def _params(self) -> list[torch.nn.Parameter]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in self._params if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                 "exp_avg_sq": torch.zeros_like(p)}
        states = [self.state[p] for p in params]
        for p, s in zip(params, states):
            s["exp_avg"], s["exp_avg_sq"] = _laid_out_like(p, s["exp_avg"]), _laid_out_like(p, s["exp_avg_sq"])
        steps = [s["step"] for s in states]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [_laid_out_like(p, p.grad) for p in params], [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"], maximize=False)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: state by parameter index, the group with ``params`` as indices."""
        index = {p: i for i, p in enumerate(self._params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group = _TORCH_GROUP_FLAGS | group | {"params": list(range(len(self._params)))}
        return {"state": {index[p]: dict(s) for p, s in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Takes a state_dict of this class or of ``torch.optim.Adam`` for the same parameters."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self._params):
            raise ValueError("the optimizer state is for a different set of parameters")
        group = self.param_groups[0]
        group.update(lr=groups[0]["lr"], betas=tuple(groups[0]["betas"]), eps=groups[0]["eps"])
        self.state = {}
        for idx, slots in state_dict["state"].items():
            p = self._params[int(idx)]
            self.state[p] = {
                "step": torch.as_tensor(slots["step"], dtype=torch.float32).clone(),
                "exp_avg": slots["exp_avg"].to(p.device, p.dtype),
                "exp_avg_sq": slots["exp_avg_sq"].to(p.device, p.dtype),
            }


def _laid_out_like(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` with ``p``'s strides: the fused kernel walks a parameter's tensors as flat memory, so
    a gradient or moment laid out otherwise (a channels-last parameter's state loaded from a
    checkpoint, or kept from before the model changed memory format) would be read in the wrong
    order, silently."""
    return t if t.stride() == p.stride() else torch.empty_like(p).copy_(t)


Optimizer = torch.optim.Optimizer | Adam
"""What the trainer steps and checkpoints save: this Adam or one of torch's."""
