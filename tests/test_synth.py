"""jal-data synth: deterministic trees in the real GTA5 / SYNTHIA / Cityscapes layouts, with the gap we claim."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jal_deploy.cli.data import main as data_main
from jal_deploy.labels import CITYSCAPES_LABELS, CLASS_NAMES_19, TRAINID_TO_ID, TRAINID_TO_SYNTHIA, get_protocol
from jal_deploy.synth import DOMAINS, SynthError, generate
from jal_deploy.synth import materials as M
from jal_deploy.synth.render import render
from jal_deploy.synth.scene import make_scene

TINY = {"gta5": 3, "synthia": 3, "cs_train": 3, "cs_val": 3}
SIZE = (128, 64)
ID_COLOUR = {lab.id: lab.color for lab in CITYSCAPES_LABELS}
INSTANCE_IDS = {lab.id for lab in CITYSCAPES_LABELS if lab.has_instances}
VOID_IDS = {0, 1, 4}  # unlabeled, ego vehicle, static


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "tiny"
    summary = generate(root, seed=0, counts=TINY, size=SIZE, progress=False, workers=1)
    return root, summary


@pytest.fixture(scope="session")
def modest(tmp_path_factory):
    """Enough frames at 256x128 for every class of every domain to appear."""
    root = tmp_path_factory.mktemp("synth") / "modest"
    return generate(root, seed=0, counts={"gta5": 30, "synthia": 30, "cs_train": 20, "cs_val": 10},
                    size=(256, 128), progress=False, workers=2)


def test_same_seed_gives_identical_bytes_whatever_the_number_of_workers(tiny, tmp_path):
    root, _ = tiny
    generate(tmp_path / "again", seed=0, counts=TINY, size=SIZE, progress=False, workers=2)
    assert tree_hashes(tmp_path / "again") == tree_hashes(root)


def test_different_seeds_give_different_frames(tiny, tmp_path):
    root, _ = tiny
    generate(tmp_path / "seed1", seed=1, counts=TINY, size=SIZE, progress=False, workers=1)
    a, b = tree_hashes(root), tree_hashes(tmp_path / "seed1")
    assert a.keys() == b.keys()
    images = [k for k in a if k.startswith(("gta5/images", "synthia/RGB", "cityscapes/leftImg8bit"))]
    assert len(images) == 12 and all(a[k] != b[k] for k in images)


def test_trees_hold_exactly_the_real_layouts_and_list_files(tiny):
    root, _ = tiny
    files = set(tree_hashes(root))
    expected = {"synth.json", "gta5/train.txt", "synthia/train.txt", "cityscapes/train.txt", "cityscapes/val.txt"}
    for i in range(3):
        expected |= {f"gta5/images/{i + 1:05d}.png", f"gta5/labels/{i + 1:05d}.png",
                     f"synthia/RGB/{i:07d}.png", f"synthia/GT/LABELS/{i:07d}.png"}
    cs = {split: [line for line in (root / "cityscapes" / f"{split}.txt").read_text().splitlines()]
          for split in ("train", "val")}
    for split, lines in cs.items():
        assert len(lines) == 3
        for line in lines:
            city, name = line.split("/")
            stem = name[: -len("_leftImg8bit.png")]
            assert name.endswith("_leftImg8bit.png") and stem.startswith(city + "_")
            c, seq, frame = stem.rsplit("_", 2)
            assert c == city and len(seq) == 6 and len(frame) == 6
            expected |= {f"cityscapes/leftImg8bit/{split}/{line}"} | {
                f"cityscapes/gtFine/{split}/{city}/{stem}_gtFine_{kind}.png"
                for kind in ("labelIds", "instanceIds", "color")}
    assert files == expected  # nothing else: no temp files, no in-progress marker
    assert (root / "gta5/train.txt").read_text() == "00001.png\n00002.png\n00003.png\n"
    assert (root / "synthia/train.txt").read_text() == "0000000.png\n0000001.png\n0000002.png\n"
    manifest = json.loads((root / "synth.json").read_text())
    assert manifest["seed"] == 0 and manifest["size"] == list(SIZE) and manifest["counts"] == TINY
    assert set(manifest["styles"]) == {"gta5", "synthia", "cityscapes"} and manifest["version"]
    assert manifest["styles"]["cityscapes"]["appearance"]["swaps"] == [[0, 1], [2, 8]]


def test_gta5_labels_are_palette_pngs_indexed_by_cityscapes_label_id(tiny):
    root, _ = tiny
    valid = set(TRAINID_TO_ID.tolist()) | VOID_IDS
    for i in range(1, 4):
        img = Image.open(root / f"gta5/images/{i:05d}.png")
        lab = Image.open(root / f"gta5/labels/{i:05d}.png")
        assert img.mode == "RGB" and img.size == SIZE
        assert lab.mode == "P" and lab.size == SIZE
        palette = np.array(lab.getpalette()[: 34 * 3]).reshape(34, 3)
        for lid, colour in ID_COLOUR.items():
            assert tuple(palette[lid]) == colour
        assert set(np.unique(np.array(lab)).tolist()) <= valid


def test_synthia_labels_are_16bit_with_class_in_red_and_instances_in_green(tiny):
    root, _ = tiny
    sixteen = get_protocol("16").train_ids  # no terrain, truck or train, as SYNTHIA
    allowed = {int(TRAINID_TO_SYNTHIA[t]) for t in sixteen} | {0}
    instance_classes = {int(TRAINID_TO_SYNTHIA[t]) for t in sixteen if t >= M.PERSON}
    for i in range(3):
        gt = cv2.imread(str(root / f"synthia/GT/LABELS/{i:07d}.png"), cv2.IMREAD_UNCHANGED)
        assert gt.dtype == np.uint16 and gt.shape == (SIZE[1], SIZE[0], 3)
        cls, inst = gt[..., 2], gt[..., 1]
        assert not gt[..., 0].any()
        assert set(np.unique(cls).tolist()) <= allowed
        assert set(np.unique(cls[inst > 0]).tolist()) <= instance_classes
        assert (inst[np.isin(cls, list(instance_classes))] > 0).all()
        assert Image.open(root / f"synthia/RGB/{i:07d}.png").mode == "RGB"


def test_cityscapes_label_instance_and_colour_files_agree(tiny):
    root, _ = tiny
    for path in sorted((root / "cityscapes/gtFine").rglob("*_gtFine_labelIds.png")):
        ids = np.array(Image.open(path))
        inst = cv2.imread(str(path).replace("labelIds", "instanceIds"), cv2.IMREAD_UNCHANGED)
        colour = np.array(Image.open(str(path).replace("labelIds", "color")))
        assert ids.dtype == np.uint8 and ids.ndim == 2 and inst.dtype == np.uint16 and colour.shape[2] == 3
        grouped = inst >= 1000
        assert (inst[grouped] // 1000 == ids[grouped]).all() and (inst[~grouped] == ids[~grouped]).all()
        assert set(np.unique(ids[grouped]).tolist()) <= INSTANCE_IDS
        assert not np.isin(ids[~grouped], list(INSTANCE_IDS)).any()  # every instance pixel has an instance id
        ks = {int(v) % 1000 for v in np.unique(inst[grouped])}
        assert not ks or min(ks) == 0                                 # k counts from 0, as in Cityscapes
        for lid in np.unique(ids):
            assert (colour[ids == lid] == ID_COLOUR[int(lid)]).all()
        assert 1 in ids  # the ego-vehicle hood of the target camera


def test_every_class_of_each_domain_appears_in_a_modest_generation(modest):
    present = {s: {n for n, f in fr.items() if f > 0 and n != "void"}
               for s, fr in modest["class_pixel_fraction"].items()}
    assert present["gta5"] == set(CLASS_NAMES_19)
    assert present["synthia"] == set(CLASS_NAMES_19) - {"terrain", "truck", "train"}
    assert present["cs_train"] | present["cs_val"] == set(CLASS_NAMES_19)


def test_target_statistics_differ_from_the_source(modest):
    src, tgt = modest["class_pixel_fraction"]["gta5"], modest["class_pixel_fraction"]["cs_train"]
    assert tgt["vegetation"] > 1.3 * src["vegetation"]
    assert tgt["car"] < src["car"]
    assert tgt["void"] > 0.03 > src["void"]  # the ego hood


def test_without_label_shift_the_target_streets_have_the_source_composition(modest, tmp_path):
    """--no-label-shift: building / vegetation shares as in the source; the colour swap, camera and hood stay."""
    from jal_deploy.synth.styles import COMPOSITION, domains
    res = CliRunner().invoke(data_main, ["synth", "--out", str(tmp_path / "flat"), "--gta5", "0", "--synthia", "0",
                                         "--cs-train", "20", "--cs-val", "0", "--size", "256x128", "--workers", "2",
                                         "--no-label-shift"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "flat" / "synth.json").read_text())
    layout, source = manifest["styles"]["cityscapes"]["layout"], manifest["styles"]["gta5"]["layout"]
    assert manifest["label_shift"] is False and all(layout[k] == source[k] for k in COMPOSITION)
    assert layout["hood"] == list(DOMAINS["cityscapes"].layout.hood)  # only the composition moved
    assert domains(False)["cityscapes"].appearance == DOMAINS["cityscapes"].appearance
    assert domains(True) is DOMAINS
    src, shifted = modest["class_pixel_fraction"]["gta5"], modest["class_pixel_fraction"]["cs_train"]
    flat = manifest["class_pixel_fraction"]["cs_train"]
    # the same seed and frames: fewer trees and more facades than the default target, like the source
    assert shifted["vegetation"] > 1.3 * flat["vegetation"] and flat["building"] > 1.3 * shifted["building"]
    assert abs(flat["building"] - src["building"]) < abs(shifted["building"] - src["building"])
    assert flat["void"] > 0.03  # the ego hood is still there
    assert json.loads((Path(modest["out"]) / "synth.json").read_text())["label_shift"] is True


def _mean_colour(domain, cls, frames=6, size=(256, 128)):
    total, n = np.zeros(3), 0
    for i in range(frames):
        rng = np.random.default_rng([7, i])
        scene = make_scene(DOMAINS[domain], rng, *size)
        img = render(scene, DOMAINS[domain].appearance, rng).astype(np.float64)
        sel = (scene.label == cls) & (scene.material == cls)  # base material, not markings or windows
        total, n = total + img[sel].sum(0), n + sel.sum()
    return total / n


@pytest.mark.parametrize("a,b", [(M.ROAD, M.SIDEWALK), (M.BUILDING, M.VEGETATION)])
def test_target_colours_swap_the_source_colours_of_paired_classes(a, b):
    """The structural gap: target road looks like source sidewalk (and building like vegetation)."""
    for cls, other in ((a, b), (b, a)):
        tgt = _mean_colour("cityscapes", cls)
        to_own = np.linalg.norm(tgt - _mean_colour("gta5", cls))
        to_other = np.linalg.norm(tgt - _mean_colour("gta5", other))
        assert to_other < 0.7 * to_own, (CLASS_NAMES_19[cls], to_other, to_own)


def test_instances_agree_with_labels_and_poles_stay_learnable():
    for domain in DOMAINS:
        for i in range(4):
            scene = make_scene(DOMAINS[domain], np.random.default_rng([3, i]), 512, 256)
            inst = scene.instances
            assert (scene.inst_class[inst[inst > 0]] == scene.label[inst > 0]).all()
            assert not np.isin(scene.label[inst == 0], list(range(M.PERSON, 19))).any()
            pole = scene.label == M.POLE
            if pole.any():  # widest horizontal run of pole pixels per row: several pixels at 512 px
                runs = np.diff(np.pad(pole, ((0, 0), (1, 1))).astype(np.int8), axis=1)
                starts, ends = np.nonzero(runs == 1), np.nonzero(runs == -1)
                assert np.median(ends[1] - starts[1]) >= 3


def test_cli_refuses_a_non_empty_folder_without_force_and_regenerates_with_it(tmp_path):
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--gta5", "3", "--synthia", "1", "--cs-train", "1", "--cs-val", "1",
            "--size", "128x64", "--workers", "1"]
    first = CliRunner().invoke(data_main, args)
    assert first.exit_code == 0, first.output
    assert "Wrote 6 frames" in first.output and "Next:" in first.output
    before = tree_hashes(out)
    refused = CliRunner().invoke(data_main, args + ["--seed", "1"])
    assert refused.exit_code != 0 and "not empty" in refused.output and "--force" in refused.output
    assert tree_hashes(out) == before
    forced = CliRunner().invoke(data_main, args[:4] + ["2"] + args[5:] + ["--seed", "1", "--force"])
    assert forced.exit_code == 0, forced.output
    after = tree_hashes(out)
    assert sorted((out / "gta5/images").iterdir()) == [out / "gta5/images/00001.png", out / "gta5/images/00002.png"]
    assert after["gta5/images/00001.png"] != before["gta5/images/00001.png"]
    assert json.loads((out / "synth.json").read_text())["seed"] == 1


def test_force_never_touches_a_tree_it_did_not_write(tmp_path):
    real = tmp_path / "data" / "gta5" / "images"
    real.mkdir(parents=True)
    (real / "00001.png").write_bytes(b"real frame")
    with pytest.raises(SynthError, match="real data"):
        generate(tmp_path / "data", counts=TINY, size=SIZE, force=True, progress=False, workers=1)
    assert (real / "00001.png").read_bytes() == b"real frame"


def test_bad_size_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(data_main, ["synth", "--out", str(tmp_path / "x"), "--size", "512by256"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output


def test_synth_never_imports_torch():
    code = "import sys, jal_deploy.synth, jal_deploy.cli.data_synth; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_trees_load_with_the_dataset_readers(tiny):
    datasets = pytest.importorskip("jal_deploy.datasets")
    root, _ = tiny
    trees = [("gta5", None, "gta5/train.txt"), ("synthia", None, "synthia/train.txt"),
             ("cityscapes", "train", "cityscapes/train.txt"), ("cityscapes", "val", "cityscapes/val.txt")]
    for fmt, split, listed in trees:
        samples = datasets.find_samples(root / fmt, fmt, split, list_file=root / listed)
        assert len(samples) == 3
        for sample in samples:
            label = datasets.read_label(sample, fmt)
            assert label.shape == (SIZE[1], SIZE[0]) and datasets.read_image(sample.image).shape[:2] == label.shape
            assert set(np.unique(label).tolist()) <= set(range(19)) | {255}
            assert len(np.unique(label)) >= 4
