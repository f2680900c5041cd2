"""hypir_core: HYPIR training (SD2 UNet + LoRA, one-step restoration) as a function.

    from hypir_core import load_config, train
    summary = train(load_config("configs/tiny.yaml"), report=lambda metrics, checkpoint_dir: ...)

Nothing in this package imports Ray or Optuna. Importing it keeps bitsandbytes, which peft and
diffusers would import to print a warning about it, out of the process (``hypir_core.quiet``).
"""

from hypir_core.quiet import keep_unused_libraries_out

keep_unused_libraries_out()  # before anything here imports peft, diffusers or pyiqa

from hypir_core.config import Config, config_from_dict, config_to_dict, load_config
from hypir_core.errors import ConfigError, DataError, HypirError, WeightsError

__all__ = ["Config", "ConfigError", "DataError", "HypirError", "RunSummary", "StopTraining", "WeightsError", "config_from_dict",
           "config_to_dict", "load_config", "train"]


def __getattr__(name):
    # The trainer pulls in torch/diffusers; import it only when asked for.
    if name in ("train", "RunSummary", "StopTraining"):
        from hypir_core import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
