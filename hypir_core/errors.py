"""Errors a user can cause: each carries one sentence that names the thing and the fix."""


class HypirError(Exception):
    """Base class for errors caused by user input (config, data, paths, weights)."""


class ConfigError(HypirError):
    """A config key, type or value is not allowed."""


class DataError(HypirError):
    """Training or validation data cannot be used as given."""


class WeightsError(HypirError):
    """Model weights cannot be found or loaded."""


# What to do when a run runs out of (GPU) memory: said by the trainer, the sweep and analyze.py.
OOM_ADVICE = ("lower data_config.train.batch_size (raise gradient_accumulation_steps to keep the effective batch), "
              "set gradient_checkpointing: true, or run fewer trials per GPU (a larger resources.gpu share).")
