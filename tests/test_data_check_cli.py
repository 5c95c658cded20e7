"""`jal-data check`: a good tree prints its numbers and exits 0; an unusable one exits 1 with a message only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jal_deploy.cli.data import main
from jal_deploy.datasets import write_image, write_raw_label

IDS = np.array([[7, 7, 7, 26], [23, 23, 0, 34]], dtype=np.uint8)  # road 3, car 1, sky 2, unlabeled 1, unknown 1


def _gta5(root: Path, n: int = 3) -> Path:
    for i in range(1, n + 1):
        write_image(root / "images" / f"{i:05d}.png", np.full((2, 4, 3), i, np.uint8))
        write_raw_label(root / "labels" / f"{i:05d}.png", IDS, "gta5")
    return root


def _cityscapes(root: Path) -> Path:
    for split in ("val", "train"):
        stem = f"ulm_000000_{0 if split == 'val' else 1:06d}"
        write_image(root / "leftImg8bit" / split / "ulm" / f"{stem}_leftImg8bit.png", np.zeros((2, 4, 3), np.uint8))
        if split == "val":
            write_raw_label(root / "gtFine" / split / "ulm" / f"{stem}_gtFine_labelIds.png", IDS, "cityscapes")
    return root


def _run(*args: str):
    return CliRunner().invoke(main, ["check", *map(str, args)])


def _assert_fails(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_good_gta5_tree_prints_counts_sizes_and_id_histogram(tmp_path: Path):
    result = _run(_gta5(tmp_path / "gta5"), "--format", "gta5")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "images: 3   labelled: 3" in out
    assert "    4x2: 3" in out
    assert "label ids (24 pixels):" in out
    assert "    7 road" in out and "9 " in out and "37.500%  trainId 0" in out
    assert "   26 car" in out and "12.500%  trainId 13" in out
    assert "    0 unlabeled" in out and "ignored" in out
    assert "   34 ?" in out and "UNKNOWN id" in out
    assert "warning: unknown label ids [34] (mapped to ignore 255)" in out
    assert "OK: 3 images, 3 labels usable as gta5." in out


def test_cityscapes_val_by_default_and_unlabelled_train_split(tmp_path: Path):
    root = _cityscapes(tmp_path / "cs")
    result = _run(root, "--format", "cityscapes")
    assert result.exit_code == 0 and "(split val)" in result.output and "images: 1   labelled: 1" in result.output
    _assert_fails(_run(root, "--format", "cityscapes", "--split", "train"),
                  "images without label: 1", "ulm_000000_000001_gtFine_labelIds.png", "1 of 1 images have no label")
    result = _run(root, "--format", "cityscapes", "--split", "train", "--no-labels")
    assert result.exit_code == 0 and "OK: 1 images usable as cityscapes." in result.output


def test_missing_root_fails_with_a_message(tmp_path: Path):
    _assert_fails(_run(tmp_path / "nope", "--format", "gta5"), "Error: dataset root", "nope does not exist")


def test_empty_tree_fails_with_the_expected_layout(tmp_path: Path):
    (tmp_path / "syn" / "RGB").mkdir(parents=True)
    _assert_fails(_run(tmp_path / "syn", "--format", "synthia"), "no images matching *.png under")
    _assert_fails(_run(tmp_path, "--format", "cityscapes"), "leftImg8bit/val does not exist",
                  "leftImg8bit/{split}/<city>/*_leftImg8bit.png")


def test_missing_labels_are_named(tmp_path: Path):
    root = _gta5(tmp_path / "gta5", n=4)
    (root / "labels" / "00002.png").unlink()
    (root / "labels" / "00004.png").unlink()
    _assert_fails(_run(root, "--format", "gta5", "--show", "1"), "images without label: 2",
                  "00002.png -> expected ", "... and 1 more", "2 of 4 images have no label")


def test_wrong_label_dtypes_fail(tmp_path: Path):
    root = _gta5(tmp_path / "gta5")
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(root / "labels" / "00001.png")
    _assert_fails(_run(root, "--format", "gta5"), "00001.png is 8-bit RGB", "1 unreadable or wrongly encoded files")
    syn = tmp_path / "syn"
    write_image(syn / "RGB" / "0000001.png", np.zeros((2, 4, 3), np.uint8))
    write_raw_label(syn / "GT" / "LABELS" / "0000001.png", IDS, "cityscapes")  # 8-bit: not a SYNTHIA label
    _assert_fails(_run(syn, "--format", "synthia"), "is 8-bit with 1 channel(s)", "16-bit 3-channel")


def test_corrupt_image_fails(tmp_path: Path):
    root = _gta5(tmp_path / "gta5")
    (root / "images" / "00003.png").write_bytes(b"\x89PNG garbage")
    _assert_fails(_run(root, "--format", "gta5"), "cannot read image", "00003.png")


def test_list_file_naming_a_missing_image_fails(tmp_path: Path):
    root = _gta5(tmp_path / "gta5")
    lst = tmp_path / "train.txt"
    lst.write_text("00001.png\n00007.png\n")
    _assert_fails(_run(root, "--format", "gta5", "--list", lst), "1 of 2 files named in", "00007.png")
    lst.write_text("00003.png\n")
    result = _run(root, "--format", "gta5", "--list", lst)
    assert result.exit_code == 0 and "images: 1   labelled: 1" in result.output


@pytest.mark.parametrize("args, message", [
    (["--format", "kitti"], "Invalid value for '--format'"),
    (["--format", "gta5", "--split", "val"], "gta5 trees have no splits"),
])
def test_bad_options_fail_without_traceback(tmp_path: Path, args, message):
    result = _run(_gta5(tmp_path / "gta5"), *args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit) and message in result.output
