"""Video that holds still: flow between frames, warping, the occlusion and scene-cut fallbacks, fusion,
key-frame propagation through the pipeline and jal-segment, and the consistency metrics (TC, flicker)."""
import json
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from jal_deploy.cli.segment import main as segment
from jal_deploy.evaluation import VideoConsistency
from jal_deploy.metrics import Flicker, TemporalConsistency
from jal_deploy.pipeline import Stats, predictions
from jal_deploy.segmenter import Segmenter
from jal_deploy.job import run_job
from jal_deploy.sources import Item, Source, open_source
from jal_deploy.synth import generate_video
from jal_deploy.temporal import LabelFusion, MotionEstimator, ScoreFusion, agreement, estimate


def texture(h: int, w: int, seed: int, lo: int = 0, hi: int = 255) -> np.ndarray:
    """A smooth random grayscale texture scaled into [lo, hi]: what optical flow can lock onto."""
    t = cv2.GaussianBlur(np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    return (lo + (t - t.min()) / (t.max() - t.min()) * (hi - lo)).astype(np.uint8)


def bgr(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


# A 160-pixel-wide world seen through a 128-pixel window; labels: two bands and a box.
WORLD = texture(64, 160, 1)
WORLD_LABELS = np.zeros((64, 160), np.uint8)
WORLD_LABELS[:, 40:80] = 1
WORLD_LABELS[20:40, 90:130] = 2


def view(x: int):
    """The window at column x: (frame, labels). Moving the window left moves the content right."""
    return bgr(WORLD[:, x:x + 128]), WORLD_LABELS[:, x:x + 128].copy()


def test_a_translated_pair_warps_the_labels_exactly():
    (f0, l0), (f1, l1) = view(16), view(12)  # content moves 4 px right
    est = MotionEstimator()
    assert est(f0) is None  # nothing before the first frame
    motion = est(f1)
    assert not motion.cut and motion.backward[..., 0].mean() == pytest.approx(-4.0, abs=0.05)
    warped = motion.warp(l0, nearest=True)
    assert np.array_equal(warped[:, 4:], l1[:, 4:])  # the 4 columns that came into view have no past
    assert not motion.valid[:, :2].any() and motion.valid[:, 8:].all()  # and are the only untrusted ones
    # the same warp at twice the flow's resolution: the flow is scaled with the image
    big = cv2.resize(l0, (256, 128), interpolation=cv2.INTER_NEAREST)
    expected = cv2.resize(l1, (256, 128), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(motion.warp(big, nearest=True)[:, 8:], expected[:, 8:])


def test_fusion_keeps_the_steady_label_where_one_frame_errs_and_moves_it_with_the_scene():
    fusion, est = LabelFusion(), MotionEstimator()
    for x in (20, 16):
        frame, labels = view(x)
        assert np.array_equal(fusion.fuse(labels, est(frame)), labels)
    frame, truth = view(12)
    noisy = truth.copy()
    noisy[10, 60], noisy[50, 100] = 2, 1  # two isolated wrong pixels in this frame only
    fused = fusion.fuse(noisy, est(frame))
    assert np.array_equal(fused[:, 4:], truth[:, 4:])
    # a label that really changed wins once it holds for two frames: 1 vs 0.8 * 1.8 = 1.44, then 1 vs 0.35
    changed = truth.copy()
    changed[:, 90:100] = 3
    est2, f2 = MotionEstimator(), LabelFusion(decay=0.8)
    for _ in range(2):
        f2.fuse(truth, est2(frame))
    inside = (slice(2, 18), slice(91, 99))  # settled pixels (margin 1.8); the box's edge settles less
    assert (f2.fuse(changed, est2(frame))[inside] == truth[inside]).all()
    assert (f2.fuse(changed, est2(frame))[inside] == 3).all()


def test_agreement_is_the_share_of_agreeing_neighbours():
    labels = np.zeros((4, 5), np.uint8)
    labels[1, 1] = 7
    a = agreement(labels)
    assert a[1, 1] == 0.0 and a[0, 0] == pytest.approx(7 / 8) and a[3, 4] == 1.0 and a[1, 2] == pytest.approx(7 / 8)


def _occlusion(dx=6):
    """A bright block moving dx px right over a static dark background (256x128): the strip it uncovers was
    hidden in the previous frame."""
    bg, block = texture(128, 256, 2, 0, 90), texture(64, 96, 3, 160, 255)
    a, b = bg.copy(), bg.copy()
    a[32:96, 80:176] = block
    b[32:96, 80 + dx:176 + dx] = block
    la, lb = np.zeros((128, 256), np.uint8), np.zeros((128, 256), np.uint8)
    la[:, 64:80] = 2  # the earlier frame's guess left of the block, which the current frame does not repeat
    la[32:96, 80:176] = 1
    lb[32:96, 80 + dx:176 + dx] = 1
    return a, b, la, lb


def test_the_forward_backward_check_marks_the_uncovered_strip_and_fusion_falls_back_there():
    a, b, la, lb = _occlusion()
    motion = estimate(a, b)
    strip = (slice(32, 96), slice(80, 86))
    assert motion.valid[strip].mean() < 0.05  # a few pixels on its edge at most (the check's tolerance)
    assert motion.valid[:, :72].all() and motion.valid[36:92, 94:174].all()  # background and block interior
    assert estimate(a, b, check=False).valid[strip].sum() > 100  # brightness alone would trust most of it

    def fused(check):
        fusion = LabelFusion(decay=0.8)
        for _ in range(2):
            fusion.fuse(la, None if fusion.labels is None else estimate(a, a, check=check))
        return fusion.fuse(lb, estimate(a, b, check=check))
    untrusted = ~motion.valid[strip]  # the uncovered background: the current frame
    assert np.array_equal(fused(True)[strip][untrusted], lb[strip][untrusted])
    assert (fused(False)[strip] == 2).any()  # without the check, labels from beside the block would move in


def test_a_scene_cut_falls_back_to_the_current_frame():
    a, b = texture(64, 128, 4, 0, 120), texture(64, 128, 5, 130, 255)
    motion = estimate(a, b)
    assert motion.cut and motion.valid_share < 0.5
    fusion = LabelFusion()
    fusion.fuse(np.zeros((64, 128), np.uint8), None)
    fusion.fuse(np.zeros((64, 128), np.uint8), estimate(a, a))
    current = np.full((64, 128), 5, np.uint8)
    assert np.array_equal(fusion.fuse(current, motion), current)
    scores = ScoreFusion()
    logits = np.random.default_rng(0).normal(size=(3, 64, 128)).astype(np.float32)
    scores.fuse(logits, None)
    out = scores.fuse(-logits, motion)
    assert np.allclose(out.sum(axis=0), 1.0) and np.array_equal(out.argmax(0), (-logits).argmax(0))


def test_score_fusion_accumulates_warped_probabilities():
    motion = estimate(WORLD[:, 16:144], WORLD[:, 16:144])  # no motion: every pixel trusted
    assert motion.valid.all()
    logits = np.zeros((2, 64, 128), np.float32)
    logits[0] = np.log(3.0)  # p = (0.75, 0.25)
    fusion = ScoreFusion(decay=0.5)
    fusion.fuse(logits, None)
    flipped = logits[::-1].copy()  # p = (0.25, 0.75): one frame disagrees
    out = fusion.fuse(flipped, motion)
    assert np.allclose(out[:, 5, 5], [0.5 * 0.75 + 0.25, 0.5 * 0.25 + 0.75])  # the current frame wins by 0.25


def test_score_fusion_holds_a_label_until_another_class_leads_by_the_hysteresis():
    motion = estimate(WORLD[:, 16:144], WORLD[:, 16:144])
    fusion = ScoreFusion(decay=0.5, hysteresis=0.15)
    total = np.ones((64, 128), np.float32)

    def hold(scores, weight, past):
        return fusion.hold(scores.copy(), weight, past)  # hold adds the bonus in place
    first = np.zeros((64, 128, 2), np.float32)
    first[..., 0] = 0.6
    first[..., 1] = 0.4
    assert (hold(first, total, None) == 0).all()            # no past: the argmax
    close = first[..., ::-1].copy()                                 # class 1 leads by 0.2 ...
    close[:, 64:] = [0.45, 0.55]                                    # ... on the right half by only 0.1
    labels = hold(close, total, motion)
    assert (labels[:, :64] == 1).all() and (labels[:, 64:] == 0).all()  # 0.1 < 0.15 of the weight: held
    assert (hold(close, 2 * total, motion)[:, :64] == 1).all()   # once switched, class 1 is the one held
    assert (hold(first, 2 * total, motion)[:, :64] == 1).all()   # 0.2 < 0.15 * 2: held against class 0
    assert (hold(first, total, None) == 0).all()                 # a cut: the argmax again


def test_flicker_counts_changes_only_where_the_truth_holds():
    gt0 = np.array([[0, 0, 1, 255]], np.uint8)
    gt1 = np.array([[0, 0, 2, 255]], np.uint8)   # pixel 2 really changes; pixel 3 is ignored
    p0 = np.array([[0, 0, 1, 1]], np.uint8)
    p1 = np.array([[0, 3, 2, 4]], np.uint8)      # pixel 1 flickers; pixels 2 and 3 do not count
    f = Flicker().update(p0, p1, gt0, gt1)
    assert (f.changed, f.steady, f.rate) == (1, 2, 0.5)
    f.update(p1, p1, gt1, gt1)                   # a steady pair: 3 more steady pixels, no change
    assert f.rate == pytest.approx(1 / 5)
    assert np.isnan(Flicker().rate)


def test_tc_is_the_mean_per_pair_miou_of_warped_predictions():
    tc = TemporalConsistency()
    a = np.array([[0, 0, 1, 1]], np.uint8)
    tc.update(a, a)                                             # identical: 1
    tc.update(a, np.array([[0, 1, 1, 1]], np.uint8))            # class 0: 1/2, class 1: 2/3
    assert tc.scores == [1.0, pytest.approx((0.5 + 2 / 3) / 2)]
    valid = np.array([[True, False, True, True]])
    tc.update(a, np.array([[0, 1, 1, 1]], np.uint8), valid)     # the disagreeing pixel left out: 1
    assert tc.scores[-1] == 1.0 and tc.score == pytest.approx((2 + (0.5 + 2 / 3) / 2) / 3)


def test_video_consistency_of_a_steady_pan_is_perfect_and_a_flickering_one_is_not():
    steady, noisy = VideoConsistency(), VideoConsistency()
    for i, x in enumerate((24, 20, 16, 12)):
        frame, labels = view(x)
        steady.update(frame, labels, labels)
        wrong = labels.copy()
        wrong[30:34, 100:104] = 2 if i % 2 else 0  # a patch that flips every frame
        noisy.update(frame, wrong, labels)
    assert steady.results() == {"tc": 1.0, "flicker": 0.0, "tc_pairs": 3}
    r = noisy.results()
    assert r["tc"] < 1.0 and r["flicker"] > 0.0


class _Frames(Source):
    kind = "video"

    def __init__(self, frames, live=False, delay=0.0):
        super().__init__("frames")
        self.frames, self.live, self.delay, self.length = frames, live, delay, len(frames)

    def __iter__(self):
        for i, f in enumerate(self.frames):
            time.sleep(self.delay)
            yield Item(i, f"f{i}", f)


def _drive(n, seed=0):
    return [bgr(texture(64, 128 + 2 * n, seed)[:, 2 * (n - i):2 * (n - i) + 128]) for i in range(n)]


def test_pipeline_cut_runs_the_network_on_a_skipped_frame_and_fusion_starts_afresh(runtime_models):
    seg = Segmenter.from_path(runtime_models["labels"])
    a = _drive(2, seed=4)
    b = [bgr(texture(64, 128, 5, 130, 255)), bgr(texture(64, 128, 6, 130, 255))]
    stats = Stats()
    strided = list(predictions(seg, _Frames([a[0], b[0], b[0], b[0]]), vid_stride=3, stats=stats))  # cut at 1
    assert [p.reused for p in strided] == [False, False, True, False] and stats.inferred == 3
    assert np.array_equal(strided[1].labels, seg.predict(b[0]))
    fused = list(predictions(seg, _Frames([a[0], a[1], b[1]]), temporal=True))
    assert np.array_equal(fused[2].labels, seg.predict(b[1]))
    assert np.array_equal(fused[0].labels, seg.predict(a[0]))
    repeat = list(predictions(seg, _Frames([a[0], a[1], a[1]]), vid_stride=3, fill="repeat"))
    assert repeat[1].labels is repeat[0].labels
    fused_repeat = list(predictions(seg, _Frames(_drive(5)), temporal=True, vid_stride=2, fill="repeat"))
    assert [p.reused for p in fused_repeat] == [False, True, False, True, False]
    assert all(np.array_equal(fused_repeat[i].labels, fused_repeat[i - 1].labels) for i in (1, 3))
    with pytest.raises(ValueError, match="fill"):
        next(predictions(seg, _Frames(a), fill="hold"))


def test_both_options_work_with_compare_and_a_logits_model(runtime_models):
    sa = Segmenter.from_path(runtime_models["logits"])
    sb = Segmenter.from_path(runtime_models["labels"])
    frames = _drive(7)
    fused = list(predictions(sa, _Frames(frames), temporal=True, vid_stride=3, compare=sb))
    assert [p.reused for p in fused] == [i % 3 != 0 for i in range(7)]
    assert all(p.labels.shape == p.other.shape == (64, 128) for p in fused)
    assert np.array_equal(fused[0].labels, sa.predict(frames[0])) and np.array_equal(fused[0].other,
                                                                                      sb.predict(frames[0]))


def test_live_sources_still_drop_frames_with_both_options(slow_segmenter):
    slow = slow_segmenter
    stats = Stats()
    preds = list(predictions(slow, _Frames(_drive(60), live=True, delay=0.002), stats=stats, temporal=True,
                             vid_stride=3))
    assert stats.dropped > 0 and len(preds) + stats.dropped == 60
    assert [p.item.index for p in preds] == sorted(p.item.index for p in preds)
    assert all(p.labels is not None for p in preds)


def _segment(*args):
    return CliRunner().invoke(segment, [*map(str, args), "--no-progress"], catch_exceptions=False)


def test_jal_segment_scores_a_labelled_drive_with_each_option(runtime_models, tmp_path):
    video = generate_video(tmp_path / "drive.mp4", seed=3, frames=8, size=(128, 64), progress=False)["path"]
    reports = {}
    for name, opts in {"plain": [], "temporal": ["--temporal"], "stride": ["--vid-stride", "3"],
                       "repeat": ["--vid-stride", "3", "--stride-fill", "repeat"]}.items():
        res = _segment(video, "-m", runtime_models["labels"], "-o", tmp_path / name, "--save", "none", *opts)
        assert res.exit_code == 0, res.output
        assert "Video: mIoU" in res.output and "TC" in res.output and "flicker" in res.output
        reports[name] = r = json.loads((tmp_path / name / "report.json").read_text())
        assert r["images"] == 8 and r["tc_pairs"] == 7 and r["timing"]["frames"] == 8 and r["timing"]["fps"] > 0
        assert 0 <= r["miou"] <= 1 and 0 <= r["tc"] <= 1 and 0 <= r["flicker"] <= 1
    assert reports["temporal"]["temporal"] and reports["stride"]["stride_fill"] == "flow"
    assert reports["stride"]["timing"]["inferred"] == reports["repeat"]["timing"]["inferred"] == 3  # 0, 3, 6
    assert "flow" in reports["stride"]["timing"]["ms_per_frame"] and "flow" not in reports["repeat"]["timing"]["ms_per_frame"]
    res = _segment(video, "-m", runtime_models["labels"], "--compare", runtime_models["logits"], "--temporal",
                   "-o", tmp_path / "cmp", "--save", "none")
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp" / "report.json").read_text())["compare"]
    assert 0 <= cmp["tc"] <= 1 and 0 <= cmp["flicker"] <= 1 and cmp["tc_pairs"] == 7
    res = _segment(video, "-m", runtime_models["labels"], "-o", tmp_path / "unscored", "--save", "none",
                   "--no-score", "--temporal")
    assert res.exit_code == 0 and "Video: mIoU" not in res.output
    assert "miou" not in json.loads((tmp_path / "unscored" / "report.json").read_text())
    source = open_source(str(video))  # unscored, the label files are not even read (timing without their cost)
    assert source.labelled and all(item.label is not None for item in source)
    source = open_source(str(video))
    run_job(Segmenter.from_path(runtime_models["labels"]), source, tmp_path / "unscored2", save=(), progress=False,
            log=lambda *_: None, score=False)
    assert not source.read_labels
    source = open_source(str(video))
    source.read_labels = False
    assert [item.label for item in source] == [None] * 8
    res = _segment(video, "-m", runtime_models["labels"], "--stride-fill", "hold")
    assert res.exit_code == 2 and "hold" in res.output


def test_help_explains_the_video_options():
    out = CliRunner().invoke(segment, ["--help"]).output
    assert "--temporal" in out and "--stride-fill" in out and "--no-score" in out and "drive_labelIds" in out
