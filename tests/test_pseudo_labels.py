"""Pseudo labels: class-balanced and anchored thresholds, the Cityscapes tree, teachers, resume, precision, Ctrl-C."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from jal_deploy.datasets import check_tree, find_samples, read_label, read_raw_label
from jal_deploy.labels import IGNORE
from tests.test_training import tiny_cfg
from training.checkpoints import load_trained
from training.cli import main as train_main
from training.engine import Trainer
from training.evaluate import deployed_output
from training.pseudo_labels import (N_BINS, PseudoLabelError, PseudoLabelOptions, anchored_percentiles,
                                    class_thresholds, kept_counts, kept_shares, make_pseudo_labels)

QUIET = {"progress": False, "log": lambda *_: None}


MANY = 80  # frames of the `many_targets` tree


def ctrl_c_once_written(args: list[str], folder, pattern: str = "*_gtFine_labelIds.png") -> tuple[int, str]:
    """Run `args` as its own process and press Ctrl-C (a real SIGINT) as soon as a file matching `pattern` appears
    under `folder`: (exit status, stdout + stderr). A separate process, so that nothing an earlier test left in
    this one (threads, signal state, GIL scheduling) decides whether the Ctrl-C lands."""
    # A test run started as a background job of a non-interactive shell (`pytest &`, as CI scripts do) ignores
    # SIGINT from its start, and SIG_IGN is inherited across exec: give the command the default disposition an
    # interactive shell gives it
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not any(folder.rglob(pattern)):
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def labels_in(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*_gtFine_labelIds.png"))}


def test_class_thresholds_are_the_median_confidence_capped():
    hist = np.zeros((3, N_BINS), dtype=np.int64)
    hist[0, [1000, 2000, 3000, 4000, 5000]] = 1   # confidences 0.1 .. 0.5: median 0.3
    hist[1, [9500, 9600, 9700]] = 1               # median 0.96, capped at 0.9
    thresholds = class_thresholds(hist, percentile=50, cap=0.9)
    assert thresholds.tolist() == [3000, 9000, 0]  # class 2 never predicted
    assert class_thresholds(hist, percentile=20, cap=0.9)[0] == 2000  # sorted index round(5 * 0.2) = 1


def test_anchored_percentiles_keep_each_class_share_of_all_pixels():
    hist = np.zeros((3, N_BINS), dtype=np.int64)
    hist[0, 1000 + 10 * np.arange(100)] = 1  # 100 pixels, confidences 0.100 .. 0.199
    hist[1, 2000 + 10 * np.arange(50)] = 1   # 50 pixels, 0.200 .. 0.249
    shares = np.array([0.2, 0.5, 0.1])       # of the 150 pixels: 30, 75 (more than predicted), 15 (never predicted)
    thresholds = class_thresholds(hist, anchored_percentiles(hist, shares), cap=1.0)
    assert kept_counts(hist, thresholds).tolist() == [30, 50, 0]
    assert thresholds[0] == 1700  # the 30 most confident of class 0: 0.170 .. 0.199
    capped = class_thresholds(hist, anchored_percentiles(hist, shares), cap=0.15)
    assert kept_counts(hist, capped).tolist() == [50, 50, 0]  # a pixel at or above the cap is always kept


def assert_keeps_shares(summary: dict, anchor: dict, pixels: int) -> None:
    """Each class kept min(its share in `anchor`, its predicted share) of all `pixels`: within one pixel, or more
    where its threshold is at the cap (pixels that confident are always kept) or pixels share the threshold bin."""
    kept, wanted = kept_shares(summary), kept_shares(anchor)
    cap_bin = round(summary["settings"]["cap"] * N_BINS)
    at_threshold = 0
    for c, name in enumerate(summary["classes"]):
        target = min(wanted[c], summary["predicted_share"][name])
        assert kept[c] >= target - 1 / pixels, name
        if summary["threshold_bins"][c] < cap_bin:
            at_threshold += (kept[c] - target) * pixels
    assert 0 <= at_threshold <= 0.01 * pixels  # ties in the threshold bins: a few pixels in all


def test_class_shares_of_an_earlier_tree_are_kept_by_another_model(synth_root, adapted, teacher, pseudo, tmp_path):
    pixels = 6 * 64 * 128
    plain = make_pseudo_labels(teacher, synth_root / "cityscapes", tmp_path / "plain", PseudoLabelOptions(), **QUIET)
    predicted = {n: v * pixels for n, v in plain["predicted_share"].items() if v}
    assert len(predicted) >= 2
    # an earlier tree that kept a fifth of the pixels as the teacher's most frequent class and far more than the
    # teacher predicts of the next one: the median would keep half of each
    first, second = sorted(predicted, key=predicted.get, reverse=True)[:2]
    anchor = {**pseudo[1], "predicted_share": {n: {first: 0.2, second: 0.9}.get(n, 0.0) for n in plain["classes"]},
              "kept_fraction": {n: 1.0 for n in plain["classes"]}}
    anchor_json = tmp_path / "earlier.json"
    anchor_json.write_text(json.dumps(anchor))
    out = tmp_path / "anchored"
    args = ["pseudo-label", str(teacher), "--target", str(synth_root / "cityscapes"), "--out", str(out),
            "--class-shares", str(anchor_json), "--cap", "1", "--no-progress"]  # no cap: the shares alone
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "pseudo_labels.json").read_text())
    assert summary["settings"]["class_shares"] == str(anchor_json.resolve()) and "--class-shares" in summary["command"]
    assert "class_shares" not in plain["settings"]  # trees made with a percentile keep their settings
    assert_keeps_shares(summary, anchor, pixels)
    kept = dict(zip(summary["classes"], kept_shares(summary) * pixels))
    assert kept[first] == pytest.approx(0.2 * pixels, abs=0.01 * pixels)
    assert kept[second] == predicted[second] and summary["kept_fraction"][second] == 1.0  # all it predicts
    assert sum(kept.values()) == pytest.approx(kept[first] + kept[second])  # classes the anchor never kept: none
    assert plain["kept_fraction"][second] < 1.0  # the median kept only half
    with pytest.raises(PseudoLabelError, match="class_shares"):  # same folder, no anchor: refused
        make_pseudo_labels(teacher, synth_root / "cityscapes", out, PseudoLabelOptions(cap=1.0), **QUIET)
    (tmp_path / "broken.json").write_text("{}")
    (tmp_path / "16.json").write_text(json.dumps({**anchor, "classes": anchor["classes"][:16]}))
    for bad, message in (("broken.json", "not a readable"), ("16.json", "another label protocol")):
        with pytest.raises(PseudoLabelError, match=message):
            make_pseudo_labels(teacher, synth_root / "cityscapes", tmp_path / f"out-{bad}",
                               PseudoLabelOptions(class_shares=str(tmp_path / bad)), **QUIET)
        assert not (tmp_path / f"out-{bad}").exists()  # refused before anything is written


def test_pseudo_labels_are_the_deployed_prediction_thresholded_per_class(synth_root, adapted, pseudo):
    out, summary = pseudo
    samples = find_samples(out, "cityscapes", split="train")  # a complete tree: images linked, every label there
    assert len(samples) == 6 and not check_tree(out, "cityscapes", split="train").problems
    model, _ = load_trained(adapted)
    thresholds = np.asarray(summary["threshold_bins"]) / N_BINS
    for sample in samples[:2]:
        from training.data import Augment, SegmentationDataset
        item = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="train", labelled=False,
                                   augment=Augment(size=(96, 48)))[samples.index(sample)]
        with torch.no_grad():
            prob = torch.softmax(deployed_output(model(item["image"][None])), 1)
            conf, pred = torch.nn.functional.interpolate(prob, size=(64, 128), mode="bilinear",
                                                         align_corners=True)[0].max(0)
        written = read_label(sample, "cityscapes")  # label ids read back as train ids, ignore -> 255
        kept = written != IGNORE
        assert np.array_equal(written[kept], pred.numpy()[kept])
        margin = np.abs(conf.numpy() - thresholds[pred.numpy()]) > 2 / N_BINS  # away from a bin edge
        assert np.array_equal(kept[margin], (conf.numpy() >= thresholds[pred.numpy()])[margin])
        assert set(np.unique(read_raw_label(sample.label, "cityscapes"))) <= {0, *range(7, 34)}
    assert all(v <= 0.9 for v in summary["thresholds"].values())
    for name, frac in summary["kept_fraction"].items():  # the median keeps at least half, the cap more
        assert frac is None or frac >= 0.5


def test_kept_fractions_and_precision_match_the_written_files(synth_root, pseudo):
    out, summary = pseudo
    pseudo_maps = [read_label(s, "cityscapes") for s in find_samples(out, "cityscapes", split="train")]
    real_maps = [read_label(s, "cityscapes") for s in find_samples(synth_root / "cityscapes", "cityscapes",
                                                                 split="train")]
    total = sum(m.size for m in pseudo_maps)
    assert summary["kept_total"] == pytest.approx(sum((m != IGNORE).sum() for m in pseudo_maps) / total)
    for c, name in enumerate(summary["classes"]):
        kept = sum((m == c).sum() for m in pseudo_maps)
        predicted = summary["predicted_share"][name] * total
        if predicted:
            assert kept == pytest.approx(predicted * summary["kept_fraction"][name], abs=0.5)
            labelled = sum(((p == c) & (r != IGNORE)).sum() for p, r in zip(pseudo_maps, real_maps))
            right = sum(((p == c) & (r == c)).sum() for p, r in zip(pseudo_maps, real_maps))
            if labelled:
                assert summary["precision"]["per_class"][name] == pytest.approx(right / labelled)
    saved = json.loads((out / "pseudo_labels.json").read_text())
    assert saved["status"] == "done" and saved["precision"] == summary["precision"]


def test_resumed_pseudo_labelling_writes_the_same_files_and_refuses_other_settings(synth_root, adapted, pseudo,
                                                                                    tmp_path):
    out, _ = pseudo
    copy = tmp_path / "pl"
    shutil.copytree(out, copy, symlinks=True)
    labels = sorted((copy / "gtFine" / "train").glob("*/*_gtFine_labelIds.png"))
    for path in labels[::2]:  # as if killed half way through pass 2
        path.unlink()
    kept_mtime = labels[1].stat().st_mtime_ns
    make_pseudo_labels(adapted, synth_root / "cityscapes", copy, PseudoLabelOptions(batch=1), **QUIET)
    for path in sorted((out / "gtFine" / "train").glob("*/*_gtFine_labelIds.png")):
        assert (copy / path.relative_to(out)).read_bytes() == path.read_bytes()
    assert labels[1].stat().st_mtime_ns == kept_mtime  # written frames are skipped
    with pytest.raises(PseudoLabelError, match="cap"):
        make_pseudo_labels(adapted, synth_root / "cityscapes", copy, PseudoLabelOptions(cap=0.8), **QUIET)


def test_pass_two_reuses_the_predictions_of_pass_one_that_fit_and_writes_the_same_files(synth_root, adapted,
                                                                                        pseudo, tmp_path):
    out, _ = pseudo
    model_type = type(load_trained(adapted)[0])
    frames = len(list((out / "gtFine" / "train").glob("*/*_gtFine_labelIds.png")))
    for room, forwards in ((0, 2 * frames), (3 * 64 * 128 * 2, 2 * frames - 2), (1 << 30, frames)):
        calls = []
        hook = torch.nn.modules.module.register_module_forward_hook(
            lambda module, *_: calls.append(1) if isinstance(module, model_type) else None)
        try:
            make_pseudo_labels(adapted, synth_root / "cityscapes", tmp_path / str(room), PseudoLabelOptions(),
                               cache_bytes=room, **QUIET)
        finally:
            hook.remove()
        assert len(calls) == forwards  # a frame kept from pass 1 (64x128: 3 bytes a pixel) is not predicted again
        for path in sorted((out / "gtFine" / "train").glob("*/*_gtFine_labelIds.png")):
            assert (tmp_path / str(room) / path.relative_to(out)).read_bytes() == path.read_bytes()


def test_flip_averaging_changes_the_labels_and_is_recorded(synth_root, adapted, pseudo, tmp_path):
    summary = make_pseudo_labels(adapted, synth_root / "cityscapes", tmp_path / "flip",
                                 PseudoLabelOptions(flip=True, batch=3), **QUIET)
    assert summary["settings"]["flip"] is True
    assert summary["threshold_bins"] != pseudo[1]["threshold_bins"]


def test_teachers_label_with_their_mean_softmax_and_are_recorded(synth_root, adapted, teacher, pseudo, tmp_path):
    summary = make_pseudo_labels(adapted, synth_root / "cityscapes", tmp_path / "ens",
                                 PseudoLabelOptions(teachers=(str(teacher),), batch=2), **QUIET)
    assert summary["settings"]["teachers"] == [str(teacher.resolve())]
    assert "teachers" not in pseudo[1]["settings"]  # trees made by one model keep their settings
    from training.data import Augment, SegmentationDataset
    dataset = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="train", labelled=False,
                                  augment=Augment(size=(96, 48)))
    models = [load_trained(adapted)[0].eval(), load_trained(teacher)[0].eval()]
    thresholds = np.asarray(summary["threshold_bins"]) / N_BINS
    changed = 0
    for i, sample in enumerate(find_samples(tmp_path / "ens", "cityscapes", split="train")[:3]):
        with torch.no_grad():
            probs = [torch.softmax(deployed_output(m(dataset[i]["image"][None])), 1) for m in models]
            up = [torch.nn.functional.interpolate(p, size=(64, 128), mode="bilinear", align_corners=True)[0]
                  for p in probs]
        conf, pred = (0.5 * (up[0] + up[1])).max(0)
        written = read_label(sample, "cityscapes")
        kept = written != IGNORE
        assert np.array_equal(written[kept], pred.numpy()[kept])
        margin = np.abs(conf.numpy() - thresholds[pred.numpy()]) > 2 / N_BINS
        assert np.array_equal(kept[margin], (conf.numpy() >= thresholds[pred.numpy()])[margin])
        changed += int((up[0].argmax(0) != pred).sum())
    assert changed > 0  # the teacher changed some of the adapted model's own labels
    with pytest.raises(PseudoLabelError, match="teachers"):  # same folder, other teachers: refused
        make_pseudo_labels(adapted, synth_root / "cityscapes", tmp_path / "ens", PseudoLabelOptions(), **QUIET)
    cfg = tiny_cfg(synth_root, "source-only", iters=1)
    cfg.data.protocol, cfg.data.eval_protocols, cfg.model.num_classes = "16", ("16",), 16
    other = Trainer(cfg, tmp_path / "16", progress=False)
    with pytest.raises(PseudoLabelError, match="16 classes .* share the label protocol"):
        make_pseudo_labels(adapted, synth_root / "cityscapes", tmp_path / "mixed",
                           PseudoLabelOptions(teachers=(str(other.save("16.pth")),)), **QUIET)
    assert not (tmp_path / "mixed").exists()  # refused before anything is written


def test_pseudo_label_cli_prints_the_precision_table(synth_root, adapted, teacher, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(train_main, ["pseudo-label", str(adapted), "--target", str(synth_root / "cityscapes"),
                                             "--out", str(out), "--percentile", "40", "--teacher", str(teacher),
                                             "--teacher", str(adapted), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "precision" in result.output and "road" in result.output and "method.self_training=true" in result.output
    saved = json.loads((out / "pseudo_labels.json").read_text())
    assert saved["command"].startswith("jal-train pseudo-label") and "--percentile 40.0" in saved["command"]
    assert f"--teacher {teacher} --teacher {adapted}" in saved["command"] and len(saved["settings"]["teachers"]) == 2


def test_ctrl_c_while_writing_pseudo_labels_keeps_the_written_files_and_exits_130(adapted, many_targets, tmp_path):
    out = tmp_path / "pl"
    args = ["pseudo-label", str(adapted), "--target", str(many_targets), "--out", str(out), "--no-progress"]
    returncode, output = ctrl_c_once_written([sys.executable, "-m", "training.cli", *args], out)
    assert returncode == 130, output
    assert "run the same command again to resume" in output and "Traceback" not in output
    written = labels_in(out)
    assert 1 <= len(written) < MANY and json.loads((out / "pseudo_labels.json").read_text())["status"] == "writing"
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert len(labels_in(out)) == MANY and all(p.stat().st_mtime_ns == t for p, t in written.items())
