"""The generator loss's terms, named once: each term's weight key in a config and its logged name.

Kept apart from ``losses`` (which builds the loss with torch) so that reading and checking a config
or a sweep spec does not import torch.
"""

from __future__ import annotations

# Term name -> (config weight key, logged loss name under loss/); the order is the order of the log.
TERMS = {
    "l2": ("lambda_l2", "G_mse"),
    "l1": ("lambda_l1", "G_l1"),
    "lpips": ("lambda_lpips", "G_lpips"),
    "ssim": ("lambda_ssim", "G_ssim"),
    "disc": ("lambda_gan", "G_disc"),
}
# The config keys weighting the terms: lambda_l2, lambda_l1, lambda_lpips, lambda_ssim, lambda_gan.
LOSS_WEIGHTS = tuple(key for key, _ in TERMS.values())


def weights_of(values) -> dict[str, float]:
    """{term: weight} from a Config or a dict holding the lambda_* keys."""
    get = values.get if isinstance(values, dict) else lambda key: getattr(values, key)
    return {term: get(key) for term, (key, _) in TERMS.items()}
