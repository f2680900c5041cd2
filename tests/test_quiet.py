"""Dependency noise stays off the console: bitsandbytes is never imported, transformers draws no loading bar.

Each check runs in a fresh Python process, as a trial process is, once quiet and once with
HYPIR_SWEEP_VERBOSE=1 (everything back), so it fails if the noise returns or the switch stops working.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from hypir_core.quiet import VERBOSE_ENV


def _python(script: str, verbose: bool, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    env["PYTHONPATH"] = str(ROOT)
    if verbose:
        env[VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# What a run or trial process imports: the trainer, then the libraries its models and metrics come from.
TRAINER_IMPORTS = """
    import sys
    import hypir_core.trainer
    import peft, pyiqa
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    print("bitsandbytes imported:", sys.modules.get("bitsandbytes") is not None)
"""


def _installed(distribution: str) -> bool:
    try:  # not find_spec: in this process hypir_core has already marked bitsandbytes unimportable
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("bitsandbytes"), reason="bitsandbytes is not installed here (pyiqa requires it)")
def test_importing_the_trainer_and_its_libraries_leaves_bitsandbytes_out():
    quiet = _python(TRAINER_IMPORTS, verbose=False)
    assert "bitsandbytes imported: False" in quiet.stdout
    assert "kernels" not in quiet.stderr, quiet.stderr  # "Failed to load CPU gemm_4bit_forward from kernels-community"
    verbose = _python("import sys, hypir_core, peft; print(sys.modules.get('bitsandbytes') is not None)", verbose=True)
    assert verbose.stdout.strip() == "True"


LOAD_TEXT_ENCODER = """
    import sys
    from transformers import CLIPTextConfig, CLIPTextModel
    from hypir_core.quiet import hide_weight_loading_bars
    config = CLIPTextConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=64, max_position_embeddings=8)
    CLIPTextModel(config).save_pretrained(sys.argv[1])
    hide_weight_loading_bars()
    CLIPTextModel.from_pretrained(sys.argv[1])
"""


def test_loading_a_model_draws_no_loading_bar_unless_verbose(tmp_path):
    assert "Loading weights" not in _python(LOAD_TEXT_ENCODER, False, str(tmp_path / "te")).stderr
    assert "Loading weights" in _python(LOAD_TEXT_ENCODER, True, str(tmp_path / "te")).stderr
