"""jal-data synth --shift: target shift families of different kinds, selectable, with the sources untouched."""
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from jal_deploy import datasets
from jal_deploy.cli.data import main as data_main
from jal_deploy.synth import DOMAINS, SHIFTS, SynthError, generate
from jal_deploy.synth import materials as M
from jal_deploy.synth.render import render
from jal_deploy.synth.scene import make_scene
from jal_deploy.synth.styles import COMPOSITION, domains

TINY = {"gta5": 1, "synthia": 1, "cs_train": 2, "cs_val": 2}
SIZE = (128, 64)
# sha256 (first 16 hex digits) over the relative path and bytes of every PNG of
# generate(seed=5, counts 2/2/2/2, size 128x64), computed with the code before shift families existed.
COLOUR_TREE_SHA256 = "2cdd375dd6744349"
STUFF = {"road": M.ROAD, "sidewalk": M.SIDEWALK, "building": M.BUILDING, "vegetation": M.VEGETATION, "sky": M.SKY}
FRAMES, STAT_SIZE = 8, (256, 128)


def png_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def file_hashes(root: Path, sub: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / sub).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("shifts")
    return {s: generate(base / s, seed=0, counts=TINY, size=SIZE, progress=False, workers=1, shift=s) for s in SHIFTS}


@pytest.mark.parametrize("shift", [None, "colour"])
def test_colour_is_todays_target_byte_for_byte(tmp_path, shift):
    kw = {} if shift is None else {"shift": shift}
    s = generate(tmp_path / "t", seed=5, counts={k: 2 for k in TINY}, size=SIZE, progress=False, workers=1, **kw)
    assert png_hash(tmp_path / "t") == COLOUR_TREE_SHA256
    assert s["shift"] == "colour" and json.loads((tmp_path / "t/synth.json").read_text())["shift"] == "colour"
    assert domains() is DOMAINS and domains(True, "colour") is DOMAINS


@pytest.mark.parametrize("shift", SHIFTS)
def test_each_family_writes_a_tree_the_readers_and_check_accept(trees, shift):
    root = Path(trees[shift]["out"])
    for split in ("train", "val"):
        samples = datasets.find_samples(root / "cityscapes", "cityscapes", split,
                                        list_file=root / "cityscapes" / f"{split}.txt")
        assert len(samples) == 2
        for sample in samples:
            label = datasets.read_label(sample, "cityscapes")
            assert label.shape == (SIZE[1], SIZE[0]) == datasets.read_image(sample.image).shape[:2]
            assert set(np.unique(label).tolist()) <= set(range(19)) | {255} and len(np.unique(label)) >= 4
        res = CliRunner().invoke(data_main, ["check", str(root / "cityscapes"), "--format", "cityscapes",
                                             "--split", split])
        assert res.exit_code == 0 and "OK: 2 images, 2 labels" in res.output, res.output
    manifest = json.loads((root / "synth.json").read_text())
    assert manifest["shift"] == shift and manifest["label_shift"] is True


def test_the_sources_do_not_depend_on_the_shift(trees):
    roots = {s: Path(t["out"]) for s, t in trees.items()}
    for sub in ("gta5", "synthia"):
        ref = file_hashes(roots["colour"], sub)
        assert ref and all(file_hashes(roots[s], sub) == ref for s in SHIFTS)
    targets = {s: file_hashes(roots[s], "cityscapes/leftImg8bit") for s in SHIFTS}
    assert len({tuple(t.values()) for t in targets.values()}) == len(SHIFTS)  # each family its own target
    styles = {s: json.loads((roots[s] / "synth.json").read_text())["styles"] for s in SHIFTS}
    assert all(styles[s]["gta5"] == styles["colour"]["gta5"] and styles[s]["synthia"] == styles["colour"]["synthia"]
               for s in SHIFTS)
    assert styles["appearance"]["cityscapes"]["appearance"]["swaps"] == []
    assert styles["appearance"]["cityscapes"]["appearance"]["hue_deg"] == DOMAINS["gta5"].appearance.hue_deg == 0
    assert styles["geometry"]["cityscapes"]["appearance"] == styles["geometry"]["gta5"]["appearance"]


def test_unknown_shift_is_refused(tmp_path):
    with pytest.raises(SynthError, match="unknown shift"):
        generate(tmp_path / "x", counts=TINY, size=SIZE, progress=False, workers=1, shift="snow")
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(data_main, ["synth", "--out", str(tmp_path / "y"), "--shift", "hue"])
    assert res.exit_code == 2 and "colour" in res.output and "geometry" in res.output


def test_the_demo_does_not_reuse_a_target_of_another_family(tmp_path):
    from jal_deploy.demo import _ensure_val
    root = tmp_path / "data"
    generate(root, seed=0, counts={"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": 2}, size=SIZE,
             progress=False, workers=1, shift="geometry")
    geometry = file_hashes(root, "cityscapes")
    _ensure_val(root, 2, SIZE, 0, progress=False)
    assert json.loads((root / "synth.json").read_text())["shift"] == "colour"
    regenerated = file_hashes(root, "cityscapes")
    assert regenerated != geometry
    _ensure_val(root, 2, SIZE, 0, progress=False)   # now it matches: reused as it is
    assert file_hashes(root, "cityscapes") == regenerated


def test_label_shift_only_moves_the_street_composition():
    source = DOMAINS["gta5"].layout
    flat_app, shifted_app = domains(False, "appearance")["cityscapes"], domains(True, "appearance")["cityscapes"]
    assert flat_app.layout == source and flat_app.appearance == shifted_app.appearance
    assert all(getattr(shifted_app.layout, k) == getattr(DOMAINS["cityscapes"].layout, k) for k in COMPOSITION)
    flat_geo, geo = domains(False, "geometry")["cityscapes"], domains(True, "geometry")["cityscapes"]
    assert all(getattr(flat_geo.layout, k) == getattr(source, k) for k in COMPOSITION)
    assert geo.layout.p_building > source.p_building and geo.layout.street_tree_gap > 2 * source.street_tree_gap
    others = [k for k in asdict(source) if k not in COMPOSITION]
    assert all(getattr(flat_geo.layout, k) == getattr(geo.layout, k) for k in others)  # camera, traffic, scale stay


def _frames(domain, stream):
    """FRAMES (scene, image) pairs of a style at STAT_SIZE, seeded as the benchmark's frames of seed 0."""
    out = []
    for i in range(FRAMES):
        rng = np.random.default_rng(np.random.SeedSequence([0, stream, i]))
        scene = make_scene(domain, rng, *STAT_SIZE)
        out.append((scene, render(scene, domain.appearance, rng)))
    return out


def _stats(frames):
    """Mean colour and grey-level spread of each STUFF class (base material pixels), label shares, horizon,
    and the mean grey-level standard deviation of a frame (its global contrast)."""
    colour, spread = {}, {}
    for name, cls in STUFF.items():
        px = np.concatenate([img[(s.label == cls) & (s.material == cls)] for s, img in frames]).astype(np.float64)
        colour[name], spread[name] = px.mean(0), px.mean(1).std()
    counts = sum(np.bincount(s.label.ravel(), minlength=256) for s, _ in frames)
    shares = {n: counts[c] / counts.sum() for n, c in (("road", M.ROAD), ("car", M.CAR), ("vegetation", M.VEGETATION),
                                                        ("building", M.BUILDING), ("sky", M.SKY))}
    horizon = np.mean([s.camera.horizon / s.label.shape[0] for s, _ in frames])
    contrast = np.mean([cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).std() for _, img in frames])
    return colour, spread, shares, horizon, contrast


@pytest.fixture(scope="module")
def measured():
    src = _stats(_frames(DOMAINS["gta5"], 1))
    return src, {s: _stats(_frames(domains(True, s)["cityscapes"], 3)) for s in SHIFTS}


def _distance(a, b):
    return {n: float(np.linalg.norm(a[0][n] - b[0][n])) for n in STUFF}


def test_appearance_keeps_the_class_colours_but_changes_the_image_statistics(measured):
    src, tgt = measured
    app, col = _distance(tgt["appearance"], src), _distance(tgt["colour"], src)
    assert np.mean(list(app.values())) < 0.5 * np.mean(list(col.values())), (app, col)
    for name in STUFF:  # every class looks most like itself in the source: no colour confusion
        nearest = min(STUFF, key=lambda o: np.linalg.norm(tgt["appearance"][0][name] - src[0][o]))
        assert nearest == name, (name, nearest)
    nearest_road = min(STUFF, key=lambda o: np.linalg.norm(tgt["colour"][0]["road"] - src[0][o]))
    assert nearest_road == "sidewalk"  # ...whereas the colour family confuses them on purpose
    # texture, shadows and noise: grey levels within a class spread much more than in the rendered source
    ratio = np.mean([tgt["appearance"][1][n] / src[1][n] for n in ("road", "sidewalk", "building", "vegetation")])
    assert ratio > 1.3, ratio
    assert abs(tgt["appearance"][3] - src[3]) < 0.03  # the source's camera


def test_appearance_effects_leave_the_labels_alone():
    """Without the label shift the appearance family has GTA5's layout: same scenes, different pictures."""
    style, gta5 = domains(False, "appearance")["cityscapes"], DOMAINS["gta5"]
    for i in range(3):
        a = make_scene(style, np.random.default_rng([9, i]), *SIZE)
        b = make_scene(gta5, np.random.default_rng([9, i]), *SIZE)
        assert (a.label == b.label).all() and (a.instances == b.instances).all()
        ia = render(a, style.appearance, np.random.default_rng([9, i, 1]))
        ib = render(b, gta5.appearance, np.random.default_rng([9, i, 1]))
        assert np.abs(ia.astype(int) - ib.astype(int)).mean() > 5


def test_geometry_moves_the_horizon_and_the_class_proportions_not_the_colours(measured):
    src, tgt = measured
    geo, col = tgt["geometry"], tgt["colour"]
    assert geo[3] > src[3] + 0.10, (geo[3], src[3])          # a pitched-up camera: horizon 10 % of H lower
    assert geo[2]["car"] > 1.5 * src[2]["car"], (geo[2], src[2])
    assert geo[2]["vegetation"] < 0.5 * src[2]["vegetation"], (geo[2], src[2])
    assert geo[2]["road"] < 0.85 * src[2]["road"], (geo[2], src[2])
    d = np.mean(list(_distance(geo, src).values()))
    assert d < 0.25 * np.mean(list(_distance(col, src).values())), d


def test_weather_fogs_the_frames_without_a_colour_swap(measured):
    src, tgt = measured
    weather = tgt["weather"]
    assert weather[4] < 0.85 * src[4], (weather[4], src[4])            # fog and dull light: less contrast
    assert weather[1]["sky"] < 0.5 * src[1]["sky"], (weather[1], src[1])  # an even grey sky
    assert np.linalg.norm(weather[0]["road"] - src[0]["road"]) < 20     # no swap: the road is still asphalt
    assert domains(True, "weather")["cityscapes"].appearance.swaps == ()
    assert abs(weather[3] - src[3]) < 0.03 and weather[2] == tgt["appearance"][2]  # GTA5's camera and streets


def test_cli_records_the_shift(tmp_path):
    out = tmp_path / "geo"
    res = CliRunner().invoke(data_main, ["synth", "--out", str(out), "--gta5", "0", "--synthia", "0", "--cs-train", "1",
                                         "--cs-val", "1", "--size", "128x64", "--workers", "1",
                                         "--shift", "appearance", "--no-label-shift"])
    assert res.exit_code == 0 and "target shift appearance" in res.output, res.output
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["shift"] == "appearance" and manifest["label_shift"] is False
    assert manifest["styles"]["cityscapes"]["layout"] == manifest["styles"]["gta5"]["layout"]
    img = cv2.imread(str(next((out / "cityscapes/leftImg8bit/val").rglob("*.png"))))
    assert img.shape == (64, 128, 3)
