"""Pseudo labels: class-balanced thresholds, the Cityscapes tree, flip averaging, resume, precision, Ctrl-C."""
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
from training.checkpoints import load_trained
from training.cli import main as train_main
from training.evaluate import deployed_output
from training.pseudo_labels import N_BINS, PseudoLabelError, PseudoLabelOptions, class_thresholds, make_pseudo_labels

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


def test_pseudo_label_cli_prints_the_precision_table(synth_root, adapted, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(train_main, ["pseudo-label", str(adapted), "--target", str(synth_root / "cityscapes"),
                                             "--out", str(out), "--percentile", "40", "--flip", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "precision" in result.output and "road" in result.output and "method.self_training=true" in result.output
    saved = json.loads((out / "pseudo_labels.json").read_text())
    assert saved["command"].startswith("jal-train pseudo-label") and "--percentile 40.0" in saved["command"]
    assert "--flip" in saved["command"] and saved["settings"]["flip"] is True


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
