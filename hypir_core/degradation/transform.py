"""Upstream HYPIR's RealESRGANBatchTransform: HQ batches in, degraded training pairs out, on the device.

``transform(batch, step, slot)`` takes what hypir_core.hq_data's dataset batches hold ("hq", "kernel1",
"kernel2", "sinc_kernel", "txt"), degrades the batch (hypir_core.degradation.pipeline) with generators
seeded from (seed, step, slot), passes the pairs through the pair pool (hypir_core.degradation.pool) and
returns {"GT", "LQ", "txt", "skipped"} as the paired datasets do, GT and LQ in [0, 1] on the device.
``slot`` tells apart the batches of one step (generator and discriminator batches, accumulation).
"""

from __future__ import annotations

import torch

from hypir_core.degradation.pipeline import Draws, degrade
from hypir_core.degradation.pool import PairPool

TRAIN_STREAM = 1  # first word of the training draws' key; validation synthesis uses another


class RealESRGANBatchTransform:
    """Degrade HQ batches as Real-ESRGAN does and mix the pairs across batches through a pool of queue_size."""

    def __init__(self, settings, seed: int, device: torch.device | str):
        self.settings, self.seed, self.device = settings, int(seed), torch.device(device)
        self.pool = PairPool(settings.queue_size)

    def __call__(self, batch: dict, step: int, slot: int = 0) -> dict:
        """The training pairs for the batch of ``step`` at ``slot``; the same arguments give the same pairs."""
        skipped = batch.get("skipped", 0)
        if "hq" not in batch or len(batch["hq"]) == 0:  # every image of the batch was unreadable and skipped
            empty = torch.empty(0, 3, 0, 0, device=self.device)
            return {"GT": empty, "LQ": empty, "txt": [], "skipped": skipped}
        draws = Draws.for_key((TRAIN_STREAM, self.seed, step, slot), self.device)
        moved = [batch[key].to(self.device, non_blocking=True).float()
                 for key in ("hq", "kernel1", "kernel2", "sinc_kernel")]
        gt, lq = degrade(*moved, self.settings, draws)
        gt, lq, txt = self.pool.exchange(gt, lq, list(batch["txt"]), draws.host)
        return {"GT": gt, "LQ": lq, "txt": txt, "skipped": skipped}

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the pool (the draws need nothing, they come from the seed and step)."""
        return {"pool": self.pool.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the pool saved by `state_dict`, onto this transform's device."""
        self.pool.load_state_dict(state["pool"], self.device)


def build_batch_transform(train_cfg, seed: int, device: torch.device | str) -> RealESRGANBatchTransform | None:
    """The batch transform that ``data_config.train.batch_transform`` names; None for the identity (paired data)."""
    transform = train_cfg.batch_transform
    if getattr(transform, "kind", "identity") != "realesrgan":
        return None
    return RealESRGANBatchTransform(transform.params, seed, device)
