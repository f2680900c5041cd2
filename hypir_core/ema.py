"""The exponential moving average of the LoRA weights that validation scores and the run exports.

As HYPIR's ``utils/ema.py``: the average starts from the LoRA weights training starts with and, after
every generator step, becomes ``decay * average + (1 - decay) * weights`` with a constant ``decay``
(``ema_decay``). After n updates with weights w_1..w_n it is therefore
``decay**n * w_0 + (1 - decay) * sum_k decay**(n - k) * w_k``: w_0 keeps weight ``decay**n``, which
at 0.999 is still 0.61 after 500 steps.

``warmup=True`` (config ``ema_warmup``) ramps the decay instead, as diffusers' ``EMAModel`` does:
the k-th update uses ``min(decay, (1 + (k - 1)) / (10 + (k - 1)))`` (0 at the first update, so the
average starts at the first trained weights), which makes early validation rounds score the
trained model rather than mostly the initial one.
"""

from __future__ import annotations

import contextlib

import torch

from hypir_core.errors import WeightsError


class LoraEMA:
    """EMA of a list of parameters; ``state_dict``/``load_state_dict`` make it part of a checkpoint."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float, warmup: bool = False):
        self.decay, self.warmup = float(decay), bool(warmup)
        self.shadow = [p.detach().clone() for p in params]
        self.num_updates = 0

    def decay_at(self, update: int) -> float:
        """The decay the ``update``-th update (counting from 1) uses."""
        if not self.warmup:
            return self.decay
        step = update - 1
        return 0.0 if step <= 0 else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, params: list[torch.nn.Parameter]) -> None:
        """One update towards the current weights (call after each generator optimizer step)."""
        self.num_updates += 1
        decay = self.decay_at(self.num_updates)
        # The reference's expression, operation for operation, so both round alike; as one kernel
        # per operation over all tensors (foreach), not three per tensor.
        torch._foreach_mul_(self.shadow, decay)
        torch._foreach_add_(self.shadow, torch._foreach_mul([p.detach() for p in params], 1 - decay))

    @contextlib.contextmanager
    def swapped_in(self, params: list[torch.nn.Parameter]):
        """Within the block the parameters hold the averaged weights; the trained ones come back after."""
        trained = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, average in zip(params, self.shadow):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weights in zip(params, trained):
                    param.copy_(weights)

    def reset(self, params: list[torch.nn.Parameter]) -> None:
        """Restart the average from the given weights (resume with ``resume_ema: false``)."""
        self.shadow = [p.detach().clone() for p in params]
        self.num_updates = 0

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        if "shadow" not in state or len(state["shadow"]) != len(self.shadow):
            raise WeightsError("The checkpoint's EMA does not fit this run (it was written by an older hypir-sweep "
                               "or for other lora_rank/lora_modules); resume with resume_ema: false or start afresh.")
        self.num_updates = int(state["num_updates"])
        self.shadow = [saved.to(device=mine.device, dtype=mine.dtype).clone()
                       for saved, mine in zip(state["shadow"], self.shadow)]
