"""jal-data synth-video: a drive through one street, deterministic, written whole or not at all."""
import hashlib

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from jal_deploy.cli.data import main as data_main
from jal_deploy.synth import DOMAINS, SynthError, generate_video
from jal_deploy.synth import video as V
from jal_deploy.synth.scene import make_scene

SIZE = (128, 64)
FRAMES = 8

# make_scene maps (label, instances, void, material, tint) at 128x64 for generator [11, i], computed with
# the code before camera travel existed: stills must stay byte-identical (tests and cached datasets).
STILL_SHA256 = {
    ("gta5", 0): "f7d635b99bc2d3b9",
    ("gta5", 1): "f9d814c3dd920f47",
    ("synthia", 0): "b25d3c7ed690a62f",
    ("synthia", 1): "0107938ff0c9c46d",
    ("cityscapes", 0): "67815dac42754662",
    ("cityscapes", 1): "80ba583391234dcf",
}


def _scene_hash(scene) -> str:
    h = hashlib.sha256()
    for a in (scene.label, scene.instances, scene.void, scene.material, scene.tint):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _read(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


@pytest.fixture(scope="module")
def frames0():
    return list(V.street_frames(seed=0, frames=FRAMES, size=SIZE))


@pytest.mark.parametrize("name", ["street.mp4", "street.avi"])
def test_video_has_the_requested_frames_size_and_fps(tmp_path, name):
    s = generate_video(tmp_path / name, seed=0, frames=FRAMES, fps=12.0, size=SIZE, progress=False)
    frames, fps = _read(tmp_path / name)
    assert len(frames) == FRAMES == s["frames"]
    assert all(f.shape == (SIZE[1], SIZE[0], 3) for f in frames)
    assert fps == pytest.approx(12.0, abs=0.01) and s["fps"] == 12.0 and s["size"] == list(SIZE)
    labels = f"{name.split('.')[0]}_labelIds"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, labels])  # no temp file left behind
    assert s["labels"] == str(tmp_path / labels) and len(list((tmp_path / labels).iterdir())) == FRAMES


def test_same_seed_gives_identical_frames(frames0):
    again = list(V.street_frames(seed=0, frames=FRAMES, size=SIZE))
    assert len(again) == FRAMES and all(np.array_equal(a, b) for a, b in zip(frames0, again))


def test_consecutive_frames_are_similar_but_the_camera_moves(frames0):
    other = next(V.street_frames(seed=1, frames=FRAMES, size=SIZE))
    diff = lambda a, b: float(np.abs(a.astype(np.int16) - b).mean())  # noqa: E731
    step, unrelated = diff(frames0[0], frames0[1]), diff(frames0[0], other)
    assert 0 < step < unrelated
    assert diff(frames0[0], frames0[-1]) > step  # further along the drive, further from the start


def test_every_frame_draws_the_same_world():
    """The layout generator ends in the same state whatever the travel, so no draw depends on it; the
    camera sits where the frame says."""
    domain, states = DOMAINS["cityscapes"], []
    for travel in (0.0, 7.5, 30.0):
        rng = np.random.default_rng(5)
        scene = make_scene(domain, rng, *SIZE, travel=travel, drive=30.0)
        assert scene.camera.z == travel
        states.append(rng.bit_generator.state)
    assert states[0] == states[1] == states[2]
    with pytest.raises(ValueError):
        make_scene(domain, np.random.default_rng(5), *SIZE, travel=31.0, drive=30.0)


@pytest.mark.parametrize("key", sorted(STILL_SHA256))
def test_travel_zero_reproduces_the_still_frame(key):
    domain, i = key
    scene = make_scene(DOMAINS[domain], np.random.default_rng([11, i]), *SIZE, travel=0.0)
    assert _scene_hash(scene) == STILL_SHA256[key]


def test_existing_file_is_refused_without_force(tmp_path):
    out = tmp_path / "street.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(SynthError, match="exists"):
        generate_video(out, frames=2, size=SIZE, progress=False)
    assert out.read_bytes() == b"keep me"
    generate_video(out, frames=2, size=SIZE, progress=False, force=True)
    assert len(_read(out)[0]) == 2


def test_bad_requests_are_refused_before_any_file(tmp_path):
    for kw in ({"size": (129, 64)}, {"size": (32, 16)}, {"style": "nope"}, {"frames": 0}, {"fps": 0}):
        with pytest.raises(SynthError):
            generate_video(tmp_path / "v.mp4", progress=False, **{"size": SIZE, **kw})
    with pytest.raises(SynthError, match="suffix"):
        generate_video(tmp_path / "v.mkv", size=SIZE, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_mid_video_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        yield np.zeros((SIZE[1], SIZE[0], 3), np.uint8), np.zeros((SIZE[1], SIZE[0]), np.uint8)
        raise RuntimeError("boom")

    monkeypatch.setattr(V, "labelled_frames", broken)
    with pytest.raises(RuntimeError, match="boom"):
        generate_video(tmp_path / "v.mp4", frames=4, size=SIZE, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_the_video_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "clips" / "street.mp4"
    args = ["synth-video", str(out), "--frames", "3", "--size", "128x64", "--seed", "2"]
    r = CliRunner().invoke(data_main, args)
    assert r.exit_code == 0, r.output
    assert len(_read(out)[0]) == 3
    assert "Next: jal-segment" in r.output and str(out) in r.output
    r = CliRunner().invoke(data_main, args)
    assert r.exit_code != 0 and "exists" in r.output
    assert CliRunner().invoke(data_main, args + ["--force"]).exit_code == 0


def test_cli_errors_exit_non_zero_without_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    r = CliRunner().invoke(data_main, ["synth-video", str(blocker / "v.mp4"), "--frames", "2", "--size", "128x64"])
    assert r.exit_code != 0 and "cannot write" in r.output
    r = CliRunner().invoke(data_main, ["synth-video", str(tmp_path / "v.mp4"), "--size", "big"])
    assert r.exit_code != 0 and "WIDTHxHEIGHT" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert "Example:" in CliRunner().invoke(data_main, ["synth-video", "--help"]).output


def test_labels_are_written_beside_the_video_and_make_it_a_labelled_source(tmp_path):
    from jal_deploy.labels import ID_TO_TRAINID
    from jal_deploy.sources import open_source

    s = generate_video(tmp_path / "drive.mp4", seed=1, frames=4, size=SIZE, progress=False)
    truth = list(V.labelled_frames(seed=1, frames=4, size=SIZE))
    files = sorted((tmp_path / "drive_labelIds").iterdir())
    assert [f.name for f in files] == [f"drive_{i:06d}_labelIds.png" for i in range(4)]
    for f, (_, ids) in zip(files, truth):
        assert np.array_equal(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), ids)  # exact Cityscapes label ids
    assert {7, 23}.issubset(set(np.unique(truth[0][1]).tolist()))  # road, sky: label ids, not train ids
    source = open_source(s["path"])
    items = list(source)
    assert source.labelled and source.fmt == "cityscapes" and len(items) == 4
    assert all(np.array_equal(it.label, ID_TO_TRAINID[ids]) for it, (_, ids) in zip(items, truth))
    with pytest.raises(SynthError, match="drive_labelIds exists"):
        (tmp_path / "drive.mp4").unlink()
        generate_video(tmp_path / "drive.mp4", frames=2, size=SIZE, progress=False)
    generate_video(tmp_path / "drive.mp4", frames=2, size=SIZE, progress=False, force=True)
    assert len(list((tmp_path / "drive_labelIds").iterdir())) == 2  # the old labels went with --force
    (tmp_path / "drive_labelIds" / "drive_000001_labelIds.png").unlink()
    source = open_source(s["path"])
    assert [it.label is not None for it in source] == [True, False] and "not scored" in source.notes[0]
