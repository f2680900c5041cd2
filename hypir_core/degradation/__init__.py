"""Real-ESRGAN's degradation model (Wang et al., ICCVW 2021), as upstream HYPIR trains on HQ-only data.

- `kernels`: Gaussian, generalized Gaussian, plateau and sinc blur kernels, drawn per image.
- `noise`: Gaussian and Poisson noise, colour or gray.
- `ops`: blur, resize, JPEG, USM sharpening on batches.
- `pipeline`: the second-order degradation of a batch (`degrade`) and its seeded generators (`Draws`).
- `pool`: the training-pair pool that mixes pairs across batches (`PairPool`).
- `transform`: `RealESRGANBatchTransform`, what the trainer runs on each HQ batch on the device.
"""

from hypir_core.degradation.kernels import random_blur_kernel, random_final_sinc
from hypir_core.degradation.pipeline import Draws, degrade
from hypir_core.degradation.pool import PairPool
from hypir_core.degradation.transform import RealESRGANBatchTransform

__all__ = ["Draws", "PairPool", "RealESRGANBatchTransform", "degrade", "random_blur_kernel", "random_final_sinc"]
