"""Upstream HYPIR's HQ-only config (RealESRGANDataset + RealESRGANBatchTransform): loads, checks, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypir_core.config import config_from_dict, config_to_dict, load_config
from hypir_core.errors import ConfigError

UPSTREAM = Path(__file__).resolve().parent.parent / "configs" / "sd2_train_upstream.yaml"
META = "data_config.train.dataset.params.file_meta."
FILLED = ["output_dir=results/upstream", META + "file_list=data/hq.parquet", META + "image_path_prefix=/data/hq",
          META + "image_path_key=path", META + "prompt_key=caption"]
TRANSFORM = "data_config.train.batch_transform.params."


def error_of(overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(UPSTREAM, [*FILLED, *overrides])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_upstream_config_loads_with_its_values_once_its_todo_paths_are_filled():
    cfg = load_config(UPSTREAM, FILLED)
    train = cfg.data_config.train
    assert train.dataset.kind == "realesrgan" and train.batch_transform.kind == "realesrgan"
    assert (train.batch_size, train.dataloader_num_workers) == (6, 2)
    data = train.dataset.params
    assert (data.file_meta.file_list, data.file_meta.image_path_key, data.file_meta.prompt_key) == (
        "data/hq.parquet", "path", "caption")
    assert data.file_backend_cfg.target == "HYPIR.dataset.file_backend.HardDiskBackend"
    assert (data.out_size, data.crop_type, data.use_hflip, data.use_rot) == (512, "none", True, False)
    assert data.kernel_prob == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03] and data.blur_sigma2 == [0.2, 1.5]
    assert (data.sinc_prob, data.final_sinc_prob, data.p_empty_prompt) == (0.1, 0.8, 0.0)
    degradation = train.batch_transform.params
    assert (degradation.hq_key, degradation.extra_keys, degradation.queue_size) == ("hq", ["txt"], 256)
    assert degradation.resize_prob == [0.2, 0.7, 0.1] and degradation.noise_range == [1, 30]
    assert (degradation.stage2_scale, degradation.jpeg_range2, degradation.resize_back) == (4, [30, 95], True)
    assert (cfg.report_to, cfg.optimizer_type, cfg.max_train_steps, cfg.lora_rank) == ("tensorboard", "adam", 30000,
                                                                                       256)
    assert config_from_dict(config_to_dict(cfg), source=cfg.source, name=cfg.name) == cfg  # round-trips


def test_one_end_of_a_range_is_an_override_with_its_index():
    cfg = load_config(UPSTREAM, [*FILLED, TRANSFORM + "noise_range.1=12", TRANSFORM + "jpeg_range2.0=50",
                                 TRANSFORM + "gaussian_noise_prob=0.9"])
    params = cfg.data_config.train.batch_transform.params
    assert params.noise_range == [1, 12] and params.jpeg_range2 == [50, 95] and params.gaussian_noise_prob == 0.9
    message = error_of([TRANSFORM + "noise_range.1=0.5"])  # the upper end below the lower one
    assert "'data_config.train.batch_transform.params.noise_range'" in message and "low <= high" in message
    assert "noise_range.1=0.5" in message  # names the override it came from
    assert "has 2 elements" in error_of([TRANSFORM + "noise_range.2=3"])


@pytest.mark.parametrize("override, expected", [
    (TRANSFORM + "resize_range=[1.2, 2]", "0 < low <= 1 <= high"),
    (TRANSFORM + "jpeg_range=[0, 95]", "JPEG qualities in [1, 100]"),
    (TRANSFORM + "stage2_scale=0.5", "a number >= 1"),
    (TRANSFORM + "resize_prob=[0, 0, 0]", "not all 0"),
    (TRANSFORM + "queue_size=4", "smaller than data_config.train.batch_size 6"),
    (TRANSFORM + "hq_key=GT", "what RealESRGANDataset returns"),
    ("data_config.train.dataset.params.blur_kernel_size=20", "an odd integer"),
    ("data_config.train.dataset.params.kernel_list=[iso, box]", "kernel types from iso, aniso"),
    ("data_config.train.dataset.params.kernel_prob=[1, 1]", "2 weights for the 6 types"),
    ("data_config.train.dataset.params.blur_sigma=[0, 3]", "blur sigmas > 0"),
    ("data_config.train.dataset.params.file_backend_cfg.target=HYPIR.dataset.file_backend.PetrelBackend",
     "other backends are not supported"),
    (META + "file_list=hq.csv", "ending in .parquet, .txt or .list"),
    ("data_config.train.batch_transform.target=HYPIR.dataset.batch_transform.IdentityBatchTransform",
     "allowed keys here: hq_key, extra_keys"),
])
def test_bad_degradation_settings_are_one_sentence_naming_the_key(override, expected):
    message = error_of([override])
    assert expected in message and str(UPSTREAM) in message


def test_dataset_and_transform_must_come_together():
    paired = {"base_model_path": "demo://tiny-sd2", "max_train_steps": 1, "data_config": {"train": {
        "dataset": {"target": "AIOFolderDataset", "params": {"root": "demo://aio/train"}},
        "batch_transform": {"target": "HYPIR.dataset.batch_transform.RealESRGANBatchTransform"}}}}
    with pytest.raises(ConfigError, match="use it with the dataset HYPIR.dataset.realesrgan.RealESRGANDataset"):
        config_from_dict(paired)
    hq = {"base_model_path": "demo://tiny-sd2", "max_train_steps": 1, "data_config": {"train": {
        "dataset": {"target": "RealESRGANDataset", "params": {"file_meta": {"file_list": "hq.txt"}}}}}}
    with pytest.raises(ConfigError, match="must be HYPIR.dataset.batch_transform.RealESRGANBatchTransform"):
        config_from_dict(hq)


def test_hq_validation_takes_the_training_degradation_unless_given_its_own():
    cfg = load_config(UPSTREAM, [*FILLED, "data_config.val.hq_dir=/data/val_hq", TRANSFORM + "noise_range=[2, 9]"])
    val = cfg.data_config.val
    assert val.degradation.noise_range == [2, 9] and val.degradation.blur_sigma == [0.2, 3.0]
    assert val.degradation_seed == 0
    own = load_config(UPSTREAM, [*FILLED, "data_config.val.hq_dir=/data/val_hq",
                                 "data_config.val.degradation={noise_range: [5, 5], stage2_scale: 2}"])
    assert own.data_config.val.degradation.noise_range == [5, 5] and own.data_config.val.degradation.stage2_scale == 2
    assert own.data_config.val.degradation.jpeg_range == [30, 95]  # the rest: upstream's defaults
    assert "keep one of them" in error_of(["data_config.val.hq_dir=/a", "data_config.val.val_dir=/b"])
    assert "data_config.val.hq_dir is not set" in error_of(["data_config.val.degradation=train"])


def test_tiny_hq_config_round_trips_with_its_validation_settings():
    cfg = load_config(UPSTREAM.parent / "tiny_realesrgan.yaml", [TRANSFORM + "noise_range.1=5"])
    val = cfg.data_config.val
    assert val.hq_dir == "demo://hq/val" and val.degradation.stage2_scale == 2
    # Its own mapping: a sweep over the training noise leaves the validation set as it is.
    assert cfg.data_config.train.batch_transform.params.noise_range == [1, 5] and val.degradation.noise_range == [1, 30]
    assert config_from_dict(config_to_dict(cfg), source=cfg.source, name=cfg.name) == cfg


def test_one_end_of_a_range_the_file_leaves_out_overrides_its_default():
    cfg = load_config(UPSTREAM.parent / "tiny_realesrgan.yaml", ["data_config.val.degradation.noise_range.1=7"])
    assert cfg.data_config.val.degradation.noise_range == [1, 7]  # the mapping sets only stage2_scale
    with pytest.raises(ConfigError, match=r"Unknown key '.*params\.noise_rang' .*did you mean '.*noise_range'"):
        load_config(UPSTREAM.parent / "tiny_realesrgan.yaml", [TRANSFORM + "noise_rang.1=7"])
    with pytest.raises(ConfigError, match="sets element 1 of 'lambda_gan', which is 0.3 .*not a list"):
        load_config(UPSTREAM.parent / "tiny_realesrgan.yaml", ["lambda_gan.1=2"])
