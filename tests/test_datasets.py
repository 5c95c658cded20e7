"""Dataset formats: label tables vs cityscapesscripts, the three layouts and readers, and their errors.

Trees are written here with Pillow/OpenCV directly (not with our writers) so the readers are tested against
the formats as the real datasets store them.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from jal_deploy import labels as L
from jal_deploy.datasets import (
    DatasetError,
    Sample,
    check_tree,
    find_samples,
    format_report,
    read_image,
    read_label,
    read_raw_label,
    write_image,
    write_raw_label,
)

# Cityscapes label ids -> expected train ids: road, sidewalk, car, unlabeled, parking (ignored), id 34 (unknown).
CS_IDS = np.array([[7, 8, 26, 0], [9, 34, 7, 7]], dtype=np.uint8)
CS_TRAIN = np.array([[0, 1, 13, 255], [255, 255, 0, 0]], dtype=np.uint8)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_l(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(path)


def _save_palette(path: Path, ids: np.ndarray) -> None:
    """A GTA5-style label: palette PNG, index = Cityscapes id, palette = Cityscapes colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8))
    palette = np.zeros((256, 3), np.uint8)
    for lab in L.CITYSCAPES_LABELS:
        palette[lab.id] = lab.color
    im.putpalette(palette.ravel().tolist())
    im.save(path)


def _save_synthia(path: Path, rgb16: np.ndarray) -> None:
    """`rgb16` (H, W, 3) uint16 in RGB order, written as OpenCV wants it (BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[:, :, ::-1]))


def _save_img(path: Path, bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)


@pytest.fixture
def cityscapes(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    for split, frames in (("val", [("frankfurt", 1), ("aachen", 19), ("aachen", 3)]), ("train", [("ulm", 5)])):
        for city, frame in frames:
            stem = f"{city}_000000_{frame:06d}"
            _save_img(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb(2, 4, frame))
            if split == "val":
                _save_l(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", CS_IDS)
    return root


@pytest.fixture
def gta5(tmp_path: Path) -> Path:
    root = tmp_path / "gta5"
    for i in (2, 1, 3):
        _save_img(root / "images" / f"{i:05d}.png", _rgb(2, 4, i))
        _save_palette(root / "labels" / f"{i:05d}.png", CS_IDS)
    return root


# SYNTHIA: R = class id, G = instance id, B = 0 in real files. G and B hold *valid* SYNTHIA ids here so that
# reading the wrong channel gives a different, plausible train id map instead of an obvious failure.
SYN_R = np.array([[3, 8, 259, 0]], dtype=np.uint16)  # road, car, 259 (unknown; 3 if truncated to 8 bits), void
SYN_G = np.array([[10, 2, 2, 10]], dtype=np.uint16)  # pedestrian, building
SYN_B = np.array([[1, 1, 1, 1]], dtype=np.uint16)  # sky
SYN_TRAIN = np.array([[0, 13, 255, 255]], dtype=np.uint8)


@pytest.fixture
def synthia(tmp_path: Path) -> Path:
    root = tmp_path / "synthia"
    for i in (0, 7):
        _save_img(root / "RGB" / f"{i:07d}.png", _rgb(1, 4, i))
        _save_synthia(root / "GT" / "LABELS" / f"{i:07d}.png", np.stack([SYN_R, SYN_G, SYN_B], axis=-1))
    return root


# --- label tables ---------------------------------------------------------------------------------------------

def test_label_table_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels as cs_labels

    ref = {lab.id: lab for lab in cs_labels if lab.id >= 0}
    assert sorted(ref) == [lab.id for lab in L.CITYSCAPES_LABELS] == list(range(34))
    for ours in L.CITYSCAPES_LABELS:
        theirs = ref[ours.id]
        assert (ours.name, ours.train_id, ours.category, ours.has_instances, ours.color) == (
            theirs.name, theirs.trainId, theirs.category, theirs.hasInstances, theirs.color)
        assert L.ID_TO_TRAINID[ours.id] == theirs.trainId
    assert (L.ID_TO_TRAINID[34:] == 255).all()
    train = sorted((lab for lab in cs_labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    assert [lab.name for lab in train] == list(L.CLASS_NAMES_19)
    assert L.TRAINID_TO_ID.tolist() == [lab.id for lab in train]
    assert L.PALETTE_19.tolist() == [list(lab.color) for lab in train]


def test_synthia_ids_map_to_the_same_named_class():
    for syn_id, train_id in L.SYNTHIA_TO_TRAINID_PAIRS.items():
        name = {"pedestrian": "person"}.get(L.SYNTHIA_NAMES[syn_id], L.SYNTHIA_NAMES[syn_id])
        assert name == L.CLASS_NAMES_19[train_id]
    assert L.SYNTHIA_TO_TRAINID[L.TRAINID_TO_SYNTHIA].tolist() == list(range(19))


# --- layouts --------------------------------------------------------------------------------------------------

def test_cityscapes_val_pairs_images_with_labelids(cityscapes: Path):
    samples = find_samples(cityscapes, "cityscapes")  # split defaults to val
    assert [(s.city, s.name) for s in samples] == [
        ("aachen", "aachen_000000_000003"),
        ("aachen", "aachen_000000_000019"),
        ("frankfurt", "frankfurt_000000_000001"),
    ]
    assert samples[1].label == cityscapes / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png"
    assert read_label(samples[0], "cityscapes", check_shape=True).tolist() == CS_TRAIN.tolist()
    assert read_raw_label(samples[0].label, "cityscapes").tolist() == CS_IDS.tolist()


def test_cityscapes_train_split_can_be_read_without_labels(cityscapes: Path):
    samples = find_samples(cityscapes, "cityscapes", split="train", require_labels=False)
    assert [(s.name, s.label) for s in samples] == [("ulm_000000_000005", None)]
    with pytest.raises(DatasetError, match="ulm_000000_000005_leftImg8bit.png -> expected .*"
                       "gtFine/train/ulm/ulm_000000_000005_gtFine_labelIds.png"):
        find_samples(cityscapes, "cityscapes", split="train")
    with pytest.raises(DatasetError, match="has no label"):
        read_label(samples[0], "cityscapes")


def test_list_file_restricts_and_orders_cityscapes(cityscapes: Path, tmp_path: Path):
    lst = tmp_path / "val.txt"
    lst.write_text("frankfurt/frankfurt_000000_000001_leftImg8bit.png\n\naachen_000000_000019_leftImg8bit.png\n")
    assert [s.name for s in find_samples(cityscapes, "cityscapes", list_file=lst)] == [
        "frankfurt_000000_000001", "aachen_000000_000019"]
    lst.write_text("aachen/aachen_000000_000019_leftImg8bit.png\nbremen/bremen_000000_000001_leftImg8bit.png\n")
    with pytest.raises(DatasetError, match=r"1 of 2 files named in .*val.txt do not exist.*bremen_000000_000001"):
        find_samples(cityscapes, "cityscapes", list_file=lst)


def test_gta5_palette_label_is_read_as_ids_not_colours(gta5: Path, tmp_path: Path):
    samples = find_samples(gta5, "gta5")
    assert [s.name for s in samples] == ["00001", "00002", "00003"]
    path = samples[0].label
    assert Image.open(path).mode == "P"
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (2, 4, 3)  # OpenCV expands the palette
    assert read_raw_label(path, "gta5").tolist() == CS_IDS.tolist()
    assert read_label(samples[0], "gta5", check_shape=True).tolist() == CS_TRAIN.tolist()
    lst = tmp_path / "train.txt"
    lst.write_text("00003.png\n00001.png\n")
    assert [s.name for s in find_samples(gta5, "gta5", list_file=lst)] == ["00003", "00001"]


def test_synthia_class_id_is_the_red_channel_at_full_16_bits(synthia: Path):
    samples = find_samples(synthia, "synthia")
    assert [s.name for s in samples] == ["0000000", "0000007"]
    assert read_raw_label(samples[1].label, "synthia").tolist() == SYN_R.tolist()
    assert read_label(samples[1], "synthia", check_shape=True).tolist() == SYN_TRAIN.tolist()


def test_read_image_returns_bgr_uint8(tmp_path: Path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    Image.fromarray(bgr[..., ::-1].copy()).save(tmp_path / "x.png")  # Pillow writes RGB
    img = read_image(tmp_path / "x.png")
    assert img.dtype == np.uint8 and img.shape == (2, 3, 3) and img[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("fmt", ["cityscapes", "gta5", "synthia"])
def test_writers_round_trip_in_each_on_disk_format(tmp_path: Path, fmt: str):
    ids = np.array([[3, 8], [21, 0]], dtype=np.uint16 if fmt == "synthia" else np.uint8)
    path = tmp_path / "lab.png"
    write_raw_label(path, ids, fmt)
    assert read_raw_label(path, fmt).tolist() == ids.tolist()
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    expected = {"cityscapes": (np.uint8, (2, 2)), "gta5": (np.uint8, (2, 2, 3)), "synthia": (np.uint16, (2, 2, 3))}
    assert (raw.dtype, raw.shape) == expected[fmt]
    assert Image.open(path).mode == {"cityscapes": "L", "gta5": "P"}.get(fmt, Image.open(path).mode)
    write_image(tmp_path / "img.png", np.full((2, 2, 3), 9, np.uint8))
    assert read_image(tmp_path / "img.png").tolist() == np.full((2, 2, 3), 9).tolist()


# --- bad trees --------------------------------------------------------------------------------------------------

def test_missing_root_and_missing_image_folder_are_explained(tmp_path: Path):
    with pytest.raises(DatasetError, match="dataset root .*nowhere does not exist"):
        find_samples(tmp_path / "nowhere", "gta5")
    (tmp_path / "cs" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"leftImg8bit/val does not exist.*splits present: train/"):
        find_samples(tmp_path / "cs", "cityscapes")
    with pytest.raises(DatasetError, match="unknown dataset format 'kitti'"):
        find_samples(tmp_path, "kitti")
    with pytest.raises(DatasetError, match="gta5 trees have no splits"):
        find_samples(tmp_path, "gta5", split="val")


def test_empty_image_folder_is_an_error(tmp_path: Path):
    (tmp_path / "RGB").mkdir()
    with pytest.raises(DatasetError, match=r"no images matching \*.png under .*RGB"):
        find_samples(tmp_path, "synthia")


def test_missing_label_names_image_and_expected_label(gta5: Path):
    (gta5 / "labels" / "00002.png").unlink()
    expected = r"1 of 3 images have no label: .*images/00002.png -> expected .*labels/00002.png"
    with pytest.raises(DatasetError, match=expected):
        find_samples(gta5, "gta5")


def test_colour_label_for_cityscapes_is_rejected(tmp_path: Path):
    path = tmp_path / "a_gtFine_color.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"a_gtFine_color.png is 8-bit RGB.*single-channel 8-bit label ids"):
        read_label(path, "cityscapes")


@pytest.mark.parametrize("array, bits, channels", [
    (np.zeros((2, 2, 3), np.uint8), 8, 3),  # GT/COLOR-style 8-bit colour file
    (np.zeros((2, 2), np.uint8), 8, 1),
    (np.zeros((2, 2), np.uint16), 16, 1),
])
def test_synthia_label_must_be_16_bit_3_channel(tmp_path: Path, array, bits, channels):
    path = tmp_path / "0000001.png"
    assert cv2.imwrite(str(path), array)
    with pytest.raises(DatasetError, match=rf"is {bits}-bit with {channels} channel\(s\).*16-bit 3-channel"):
        read_label(path, "synthia")


@pytest.mark.parametrize("fmt", ["cityscapes", "gta5", "synthia"])
def test_corrupt_or_truncated_files_raise_dataset_errors(tmp_path: Path, fmt: str):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="garbage.png"):
        read_label(garbage, fmt)
    with pytest.raises(DatasetError, match="cannot decode image .*garbage.png"):
        read_image(garbage)
    good = tmp_path / "good.png"
    write_raw_label(good, np.random.default_rng(0).integers(0, 30, (64, 64)), fmt)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(DatasetError, match="truncated.png"):
        read_label(truncated, fmt)
    with pytest.raises(DatasetError, match="label .*missing.png does not exist"):
        read_label(tmp_path / "missing.png", fmt)


def test_shape_mismatch_is_an_error_only_when_checked(gta5: Path):
    _save_palette(gta5 / "labels" / "00001.png", np.full((3, 4), 7))
    sample = find_samples(gta5, "gta5")[0]
    assert read_label(sample, "gta5").shape == (3, 4)
    with pytest.raises(DatasetError, match=r"00001.png is 4x3 but image .*00001.png is 4x2"):
        read_label(sample, "gta5", check_shape=True)


def test_check_tree_counts_ids_and_reports_unknown_ones(cityscapes: Path, synthia: Path):
    report = check_tree(cityscapes, "cityscapes", progress=False)
    assert (report.num_images, report.num_labels, report.problems) == (3, 3, [])
    assert dict(report.image_sizes) == {(4, 2): 3}
    assert {i: int(n) for i, n in enumerate(report.id_hist) if n} == {0: 3, 7: 9, 8: 3, 9: 3, 26: 3, 34: 3}
    assert report.unknown_ids == {34: 3}
    text = format_report(report)
    assert "   34 ?" in text and "UNKNOWN id" in text and "warning: unknown label ids [34]" in text
    assert "    7 road" in text and "37.500%  trainId 0" in text
    syn = check_tree(synthia, "synthia", progress=False)
    assert syn.unknown_ids == {259: 2}
    assert int(syn.id_hist[3]) == 2 and int(syn.id_hist[8]) == 2


def test_check_tree_collects_missing_and_bad_labels(gta5: Path):
    (gta5 / "labels" / "00002.png").unlink()
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(gta5 / "labels" / "00003.png")
    _save_palette(gta5 / "labels" / "00009.png", CS_IDS)  # no image
    report = check_tree(gta5, "gta5", jobs=2, progress=False)
    assert [img.name for img, _ in report.missing_labels] == ["00002.png"]
    assert len(report.bad_files) == 1 and "00003.png is 8-bit RGB" in report.bad_files[0]
    assert [p.name for p in report.orphan_labels] == ["00009.png"]
    assert report.problems == ["1 of 3 images have no label", "1 unreadable or wrongly encoded files"]
    assert isinstance(find_samples(gta5, "gta5", require_labels=False)[1], Sample)


def test_hidden_temp_files_are_not_samples(tmp_path):
    from jal_deploy.datasets import find_samples, write_image, write_raw_label
    import numpy as np
    write_image(tmp_path / "images" / "00001.png", np.zeros((8, 8, 3), np.uint8))
    write_raw_label(tmp_path / "labels" / "00001.png", np.full((8, 8), 7, np.uint8), "gta5")
    (tmp_path / "images" / ".00002.png.tmpab12.png").write_bytes(b"")  # what an interrupted writer leaves
    assert [s.name for s in find_samples(tmp_path, "gta5")] == ["00001"]
