"""HQ-only training data (upstream's RealESRGANDataset): file lists, crops, prompts, kernels, bad images, seeding."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hypir_core.config_data import RealESRGANParams
from hypir_core.config_degradation import HQFileMeta
from hypir_core.data import build_train_dataset, train_batches, train_collate
from hypir_core.errors import ConfigError, DataError
from hypir_core.hq_data import RealESRGANDataset


def save_png(path, seed: int, height: int = 40, width: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def params(file_list, **changes) -> RealESRGANParams:
    meta = {k: changes.pop(k) for k in ("image_path_prefix", "image_path_key", "prompt_key") if k in changes}
    return replace(RealESRGANParams(file_meta=HQFileMeta(file_list=str(file_list), **meta)),
                   **{"out_size": 16, "crop_type": "center", **changes})


@pytest.fixture
def txt_list(tmp_path):
    for i in range(4):
        save_png(tmp_path / "images" / f"{i}.png", seed=i)
    (tmp_path / "hq.txt").write_text("\n".join(f"images/{i}.png" for i in range(4)) + "\n\n")
    return tmp_path / "hq.txt"


def test_txt_list_gives_hq_images_kernels_and_empty_prompts(txt_list):
    dataset = RealESRGANDataset(params(txt_list))
    dataset.set_epoch(0, seed=1)
    assert len(dataset) == 4  # the blank line is no entry
    item = dataset[2]
    assert item["hq"].shape == (3, 16, 16) and 0 <= item["hq"].min() and item["hq"].max() <= 1
    for name in ("kernel1", "kernel2", "sinc_kernel"):
        assert item[name].shape == (21, 21) and abs(float(item[name].sum()) - 1) < 1e-4
    assert item["txt"] == ""


def test_parquet_list_with_prefix_prompts_and_no_prompts(tmp_path):
    for i in range(3):
        save_png(tmp_path / "store" / "hq" / f"{i}.png", seed=i)
    pd.DataFrame({"path": [f"hq/{i}.png" for i in range(3)], "caption": ["a cat", None, "a dog"]}).to_parquet(
        tmp_path / "list.parquet")
    dataset = RealESRGANDataset(params(tmp_path / "list.parquet", image_path_prefix="store", image_path_key="path",
                                       prompt_key="caption"))
    assert [dataset[i]["txt"] for i in range(3)] == ["a cat", "", "a dog"]
    silent = RealESRGANDataset(params(tmp_path / "list.parquet", image_path_prefix="store", image_path_key="path",
                                      prompt_key="none"))
    assert silent[0]["txt"] == ""
    with pytest.raises(DataError, match="no column 'prompt' .*file_meta.prompt_key.*or none"):
        RealESRGANDataset(params(tmp_path / "list.parquet", image_path_prefix="store", image_path_key="path"))
    with pytest.raises(DataError, match="does not exist; fix file_meta.image_path_prefix"):
        RealESRGANDataset(params(tmp_path / "list.parquet", image_path_key="path", prompt_key="none"))


def test_p_empty_prompt_drops_prompts(tmp_path):
    for i in range(20):
        save_png(tmp_path / f"{i}.png", seed=i, height=16, width=16)
    pd.DataFrame({"image_path": [f"{i}.png" for i in range(20)], "prompt": ["text"] * 20}).to_parquet(
        tmp_path / "list.parquet")
    always = RealESRGANDataset(params(tmp_path / "list.parquet", p_empty_prompt=1.0))
    assert {always[i]["txt"] for i in range(20)} == {""}
    sometimes = RealESRGANDataset(params(tmp_path / "list.parquet", p_empty_prompt=0.5))
    prompts = [sometimes[i]["txt"] for i in range(20)]
    assert 0 < prompts.count("") < 20


@pytest.mark.parametrize("crop_type", ["none", "center", "random"])
def test_every_crop_type_gives_out_size(txt_list, crop_type):
    dataset = RealESRGANDataset(params(txt_list, crop_type=crop_type, out_size=24))
    assert dataset[0]["hq"].shape == (3, 24, 24)


def test_center_crop_scales_the_short_side_then_crops_the_middle(tmp_path):
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 24:40] = 255  # a white band in the middle third of a wide image
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    (tmp_path / "hq.list").write_text("wide.png\n")
    hq = RealESRGANDataset(params(tmp_path / "hq.list", out_size=16, use_hflip=False))[0]["hq"]
    column_means = hq[0].mean(dim=0)  # 32x64 -> 16x32 -> the middle 16 columns: the band is in their middle
    assert column_means[6:10].min() > 0.9 and column_means[:2].max() < 0.1


def test_draws_depend_only_on_seed_epoch_and_index(txt_list):
    def item(seed, epoch, index):
        dataset = RealESRGANDataset(params(txt_list, crop_type="random", use_rot=True))
        dataset.set_epoch(epoch, seed)
        return dataset[index]

    first, again = item(1, 0, 2), item(1, 0, 2)
    assert all(torch.equal(first[k], again[k]) for k in ("hq", "kernel1", "kernel2", "sinc_kernel"))
    assert not torch.equal(first["kernel1"], item(1, 1, 2)["kernel1"])  # a new epoch draws new kernels
    assert not torch.equal(first["kernel1"], item(2, 0, 2)["kernel1"])


def test_flips_and_rotations_give_the_eight_orientations(tmp_path):
    save_png(tmp_path / "a.png", seed=0, height=16, width=16)
    (tmp_path / "hq.txt").write_text("a.png\n")
    dataset = RealESRGANDataset(params(tmp_path / "hq.txt", crop_type="none", use_hflip=True, use_rot=True))
    seen = set()
    for epoch in range(64):
        dataset.set_epoch(epoch, seed=0)
        seen.add(dataset[0]["hq"].numpy().tobytes())
    assert len(seen) == 8
    upright = RealESRGANDataset(params(tmp_path / "hq.txt", crop_type="none", use_hflip=False, use_rot=False))
    assert len({upright[0]["hq"].numpy().tobytes() for _ in range(4)}) == 1


def test_bad_image_fails_naming_it_or_is_skipped_and_counted(txt_list, tmp_path, caplog):
    (tmp_path / "images" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="1.png"):
        RealESRGANDataset(params(txt_list))[1]
    dataset = RealESRGANDataset(params(txt_list), skip_bad_images=True)
    assert dataset[1] is None  # never swapped for another image, as upstream does
    batch = train_collate([dataset[i] for i in range(4)])
    assert batch["skipped"] == 1 and batch["hq"].shape[0] == 3
    assert "Skipping a bad training image" in caplog.text


def test_only_the_hard_disk_backend_is_accepted(txt_list):
    # As a plain mapping: the config itself refuses other backends (tests/test_realesrgan_config.py).
    other = {**asdict(params(txt_list)), "file_backend_cfg": {"target": "HYPIR.dataset.file_backend.Petrel"}}
    with pytest.raises(ConfigError, match="only HardDiskBackend"):
        RealESRGANDataset(other)


def test_training_batches_in_seeded_order_resume_where_they_stopped(txt_list):
    from types import SimpleNamespace as NS

    train_cfg = NS(dataset=NS(kind="realesrgan", params=params(txt_list)), batch_size=2, dataloader_num_workers=0)
    dataset = build_train_dataset(train_cfg)

    def batches(progress, count):
        stream = train_batches(dataset, train_cfg, 7, progress)
        return [next(stream) for _ in range(count)]

    straight = batches(NS(epoch=0, batches_in_epoch=0, skipped_images=0), 5)
    resumed = batches(NS(epoch=1, batches_in_epoch=0, skipped_images=0), 3)  # after 2 epochs of 2 batches
    for a, b in zip(straight[2:], resumed):
        assert torch.equal(a["hq"], b["hq"]) and torch.equal(a["kernel2"], b["kernel2"])
