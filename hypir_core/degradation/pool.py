"""Real-ESRGAN's training-pair pool: degraded pairs mixed across batches.

One batch shares its resize factor, resize mode and noise kind (they shape the whole tensor), so the
pool keeps the last ``capacity`` pairs and hands out a random selection of them instead: while it
fills, a batch passes through unchanged and is stored; once full, each batch is swapped for a random
draw of the pool's pairs, which it replaces. The pool is part of the training state: `state_dict`
goes into every checkpoint, so a resumed run draws the batches an uninterrupted one would.
"""

from __future__ import annotations

import torch


class PairPool:
    """A pool of (GT, LQ, prompt) training pairs on the device of the first batch it is given."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.gt: torch.Tensor | None = None
        self.lq: torch.Tensor | None = None  # uint8: LQ images are 8-bit by construction, so this is exact
        self.txt: list[str] = []
        self.filled = 0

    def _allocate(self, gt: torch.Tensor) -> None:
        self.gt = torch.zeros((self.capacity, *gt.shape[1:]), dtype=gt.dtype, device=gt.device)
        self.lq = torch.zeros((self.capacity, *gt.shape[1:]), dtype=torch.uint8, device=gt.device)
        self.txt = [""] * self.capacity

    def exchange(self, gt: torch.Tensor, lq: torch.Tensor, txt: list[str],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Put this batch into the pool and return the batch to train on (the same one while the pool fills).

        ``generator`` (a CPU one: the prompts' order is needed on the host, and the device never waits for it)
        draws the selection once the pool is full.
        """
        count = gt.shape[0]
        if self.capacity == 0 or count == 0:
            return gt, lq, txt
        if self.gt is None:
            self._allocate(gt)
        if tuple(gt.shape[1:]) != tuple(self.gt.shape[1:]):
            raise ValueError(f"the pair pool holds {tuple(self.gt.shape[1:])} images, got {tuple(gt.shape[1:])}")
        lq_codes = (lq * 255).round().to(torch.uint8)
        if self.filled < self.capacity:
            stored = min(count, self.capacity - self.filled)
            self.gt[self.filled:self.filled + stored] = gt[:stored]
            self.lq[self.filled:self.filled + stored] = lq_codes[:stored]
            self.txt[self.filled:self.filled + stored] = list(txt[:stored])
            self.filled += stored
            return gt, lq, txt
        order = torch.randperm(self.capacity, generator=generator)
        on_device = order.to(self.gt.device)
        self.gt, self.lq = self.gt[on_device], self.lq[on_device]
        self.txt = [self.txt[i] for i in order.tolist()]
        out_gt, out_lq, out_txt = self.gt[:count].clone(), self.lq[:count].float() / 255, self.txt[:count]
        self.gt[:count], self.lq[:count] = gt, lq_codes
        self.txt[:count] = list(txt)
        return out_gt, out_lq.to(lq.dtype), out_txt

    def state_dict(self) -> dict:
        """The pool's pairs (on the CPU) and how many it holds: what a checkpoint saves."""
        keep = slice(0, self.filled)
        return {"capacity": self.capacity, "filled": self.filled, "txt": self.txt[keep],
                "gt": None if self.gt is None else self.gt[keep].cpu(),
                "lq": None if self.lq is None else self.lq[keep].cpu()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Restore a saved pool onto ``device``; a pool of another capacity is refused."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the checkpoint's pair pool holds {state['capacity']} pairs, this run's "
                             f"queue_size is {self.capacity}")
        self.filled = int(state["filled"])
        self.gt = self.lq = None
        self.txt = [""] * self.capacity
        if state["gt"] is not None:
            self._allocate(state["gt"].to(device))
            self.gt[:self.filled] = state["gt"].to(device)
            self.lq[:self.filled] = state["lq"].to(device)
            self.txt[:self.filled] = list(state["txt"])
