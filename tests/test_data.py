"""Training and validation data: identical LQ/GT augmentation, clear errors that name the file or folder."""

from __future__ import annotations

import logging
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hypir_core.data import (
    AIOFolderDataset,
    PairedListDataset,
    build_train_dataset,
    check_val_sizes,
    read_image,
    scan_val_set,
    train_collate,
)
from hypir_core.errors import DataError


def save_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_list(tmp_path, rows: list[dict], fmt: str):
    table = pd.DataFrame(rows)
    path = tmp_path / f"pairs.{fmt}"
    table.to_parquet(path) if fmt == "parquet" else table.to_csv(path, index=False)
    return path


def paired_params(file_list, **overrides):
    params = {"file_meta": NS(file_list=str(file_list), lq_key="lq_path", gt_key="gt_path", prompt_key="prompt"),
              "out_size": 16, "crop_type": "none", "use_hflip": True, "use_rot": True, "return_file_name": False}
    params.update(overrides)
    return NS(**params)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def dihedral_variants(image: torch.Tensor) -> list[torch.Tensor]:
    flips = [image, image.flip(-1)]
    return [torch.rot90(f, k, dims=(-2, -1)) for f in flips for k in range(4)]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("crop_type, size", [("none", (16, 16)), ("random", (24, 20)), ("center", (12, 10))])
def test_paired_list_augments_lq_and_gt_identically(tmp_path, fmt, crop_type, size):
    gt = random_image(0, *size)
    save_png(tmp_path / "img" / "same_gt.png", gt)
    save_png(tmp_path / "img" / "same_lq.png", gt)
    save_png(tmp_path / "img" / "inv_gt.png", gt)
    save_png(tmp_path / "img" / "inv_lq.png", 255 - gt)  # asymmetric pattern: LQ is the negative of GT
    rows = [{"lq_path": "img/same_lq.png", "gt_path": "img/same_gt.png", "prompt": "a cat"},
            {"lq_path": "img/inv_lq.png", "gt_path": "img/inv_gt.png", "prompt": "a dog"}]
    dataset = PairedListDataset(paired_params(write_list(tmp_path, rows, fmt), crop_type=crop_type))
    orientations = set()
    for epoch in range(24):
        dataset.set_epoch(epoch, seed=0)
        same, inverted = dataset[0], dataset[1]
        assert same["GT"].shape == (3, 16, 16) and same["GT"].dtype == torch.float32
        assert torch.equal(same["LQ"], same["GT"])
        assert torch.allclose(inverted["LQ"], 1 - inverted["GT"], atol=1e-6)
        assert (same["txt"], inverted["txt"]) == ("a cat", "a dog")
        if crop_type == "none":  # whole image: the output is one of the 8 flips/rotations of the file
            variants = dihedral_variants(as_tensor(gt))
            matches = [i for i, v in enumerate(variants) if torch.equal(v, same["GT"])]
            assert matches
            orientations.add(matches[0])
    if crop_type == "none":
        assert len(orientations) >= 4  # flips and rotations really happen


def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    save_png(tmp_path / "gt.png", random_image(1, 32, 32))
    save_png(tmp_path / "lq.png", random_image(2, 32, 32))
    rows = [{"lq_path": "lq.png", "gt_path": "gt.png", "prompt": ""}] * 4
    params = paired_params(write_list(tmp_path, rows, "csv"), crop_type="random")

    def one_epoch(epoch, num_workers):
        dataset = PairedListDataset(params)
        dataset.set_epoch(epoch, seed=7)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=train_collate,
                                             num_workers=num_workers)
        return torch.cat([batch["GT"] for batch in loader])

    # The same (seed, epoch, index) draws the same augmentation, however many workers load it:
    # what lets a resumed run continue as the uninterrupted one.
    assert torch.equal(one_epoch(0, 0), one_epoch(0, 2))
    assert not torch.equal(one_epoch(0, 0), one_epoch(1, 0))


def test_missing_column_lists_the_columns(tmp_path):
    path = write_list(tmp_path, [{"lq": "a.png", "gt_path": "b.png", "prompt": ""}], "parquet")
    with pytest.raises(DataError, match=r"no column 'lq_path'.*\['lq', 'gt_path', 'prompt'\]"):
        PairedListDataset(paired_params(path))


def test_missing_file_list_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.parquet"):
        PairedListDataset(paired_params(tmp_path / "nope.parquet"))


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"Cannot read image '.*broken\.png'"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(DataError, match=r"missing\.png'.*no such file"):
        read_image(tmp_path / "missing.png")


def test_read_image_converts_grey_rgba_and_16_bit(tmp_path):
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((4, 5, 4), 9, np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    for name, value in [("grey", 7), ("rgba", 9), ("deep", 255)]:
        pixels = read_image(tmp_path / f"{name}.png")
        assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8 and (pixels == value).all()


def test_size_mismatch_in_training_pair_names_both_files(tmp_path):
    save_png(tmp_path / "lq.png", random_image(0, 16, 16))
    save_png(tmp_path / "gt.png", random_image(0, 32, 32))
    path = write_list(tmp_path, [{"lq_path": "lq.png", "gt_path": "gt.png", "prompt": ""}], "csv")
    with pytest.raises(DataError, match=r"lq\.png' is 16x16 but GT '.*gt\.png' is 32x32"):
        PairedListDataset(paired_params(path))[0]


def test_skip_bad_images_drops_and_counts_bad_pairs(tmp_path, caplog):
    save_png(tmp_path / "ok.png", random_image(0, 16, 16))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    rows = [{"lq_path": "ok.png", "gt_path": "ok.png", "prompt": "x"},
            {"lq_path": "bad.png", "gt_path": "ok.png", "prompt": "y"},
            {"lq_path": "ok.png", "gt_path": "ok.png", "prompt": "z"}]
    path = write_list(tmp_path, rows, "csv")
    with pytest.raises(DataError, match="bad.png"):
        PairedListDataset(paired_params(path))[1]
    dataset = build_train_dataset(NS(dataset=NS(kind="paired_list", params=paired_params(path))), skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="hypir_core.data"):
        items = [dataset[i] for i in range(3)] + [dataset[1]]
    assert items[1] is None and items[3] is None
    assert sum("bad.png" in record.getMessage() for record in caplog.records) == 1  # warned once per file
    batch = train_collate(items)
    assert batch["skipped"] == 2 and batch["GT"].shape == (2, 3, 16, 16) and batch["txt"] == ["x", "z"]
    assert train_collate([None])["skipped"] == 1


def make_aio(root, types=("Blur", "Haze"), names=("a.png", "b.png"), size=(16, 16)):
    for i, degradation_type in enumerate(types):
        for j, name in enumerate(names):
            save_png(root / degradation_type / "LQ" / name, random_image(10 * i + j, *size))
            save_png(root / degradation_type / "GT" / name, random_image(100 + 10 * i + j, *size))


def aio_params(root, **overrides):
    params = {"root": str(root), "degradation_types": ["Blur", "Haze"], "prompt": "remove degradation",
              "out_size": 16, "crop_type": "center", "use_hflip": False, "use_rot": False}
    params.update(overrides)
    return NS(**params)


def test_aio_folder_items_carry_type_and_prompt(tmp_path):
    make_aio(tmp_path)
    dataset = build_train_dataset(NS(dataset=NS(kind="aio_folder", params=aio_params(tmp_path))))
    assert isinstance(dataset, AIOFolderDataset) and len(dataset) == 4
    item = dataset[2]
    assert item["degradation_type"] == "Haze" and item["txt"] == "remove degradation"
    assert torch.equal(item["LQ"], as_tensor(random_image(10, 16, 16)))  # Haze/LQ/a.png, no augmentation
    assert torch.equal(item["GT"], as_tensor(random_image(110, 16, 16)))


def test_aio_folder_lists_unmatched_names(tmp_path):
    make_aio(tmp_path, names=[f"{i:02d}.png" for i in range(14)])
    for i in range(12):
        (tmp_path / "Haze" / "GT" / f"{i:02d}.png").rename(tmp_path / "Haze" / "GT" / f"{i:02d}.jpg.png")
    with pytest.raises(DataError) as error:
        AIOFolderDataset(aio_params(tmp_path))
    message = str(error.value)
    assert "Haze" in message and "(24 without a partner" in message and "and 14 more" in message
    assert "GT/00.jpg.png" in message


def test_aio_folder_missing_type_folder_is_named(tmp_path):
    make_aio(tmp_path, types=("Blur",))
    with pytest.raises(DataError, match=r"folder '.*Haze' does not exist"):
        AIOFolderDataset(aio_params(tmp_path))


def val_cfg(root, **overrides):
    cfg = {"val_dir": str(root), "degradation_types": ["Blur", "Haze"], "num_samples_per_type": None}
    cfg.update(overrides)
    return NS(**cfg)


def test_scan_val_set_takes_first_sorted_names_per_type(tmp_path):
    make_aio(tmp_path, names=("c.PNG", "a.jpg", "b.png"))
    (tmp_path / "Blur" / "LQ" / "notes.txt").write_text("not an image")
    pairs = scan_val_set(val_cfg(tmp_path, num_samples_per_type=2))
    assert [(p.degradation_type, p.name) for p in pairs] == [("Blur", "a.jpg"), ("Blur", "b.png"),
                                                               ("Haze", "a.jpg"), ("Haze", "b.png")]
    assert pairs[0].gt_path.endswith("GT/a.jpg") and len(scan_val_set(val_cfg(tmp_path))) == 6


def test_scan_val_set_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="val_dir"):
        scan_val_set(val_cfg(None))
    with pytest.raises(DataError, match=r"'.*nowhere'"):
        scan_val_set(val_cfg(tmp_path / "nowhere"))
    make_aio(tmp_path, types=("Blur",))
    with pytest.raises(DataError, match=r"folder '.*Haze' does not exist"):
        scan_val_set(val_cfg(tmp_path))
    (tmp_path / "Haze" / "LQ").mkdir(parents=True)
    (tmp_path / "Haze" / "GT").mkdir(parents=True)
    with pytest.raises(DataError, match=r"LQ folder '.*Haze/LQ' holds no images"):
        scan_val_set(val_cfg(tmp_path))


def test_val_size_mismatch_names_folder_and_files(tmp_path):
    make_aio(tmp_path)
    save_png(tmp_path / "Haze" / "GT" / "b.png", random_image(0, 16, 24))
    with pytest.raises(DataError, match=r"1 validation pair\(s\) in .*Haze: '.*LQ/b\.png' is 16x16 but '.*GT/b\.png' is 24x16"):
        scan_val_set(val_cfg(tmp_path))
    good = scan_val_set(val_cfg(tmp_path, degradation_types=["Blur"]))
    check_val_sizes(good)  # no error for matching sizes
