"""Pseudo labels (class-balanced thresholds, Cityscapes tree, resume, precision), self-training, rounds, presets."""
import json
import re
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
from jal_deploy.synth import generate
from tests.test_training import read_rows, tiny_cfg
from training.checkpoints import load_trained
from training.cli import main as train_main
from training.config import ConfigError, load_preset, resolve
from training.engine import Trainer, TrainingError
from training.evaluate import deployed_output
from training.pseudo_labels import (N_BINS, PseudoLabelError, PseudoLabelOptions, class_thresholds,
                                    make_pseudo_labels)
from training.self_training import self_train

QUIET = {"progress": False, "log": lambda *_: None}


@pytest.fixture(scope="module")
def adapted(synth_root, tmp_path_factory):
    """A (2-iteration) JAL+WTM checkpoint with WTM2 moved off the identity, so Dec2^T differs from Dec2."""
    trainer = Trainer(tiny_cfg(synth_root, "jal-wtm", iters=2), tmp_path_factory.mktemp("adapted"), progress=False)
    trainer.run()
    torch.manual_seed(3)
    with torch.no_grad():
        trainer.model.wtm2.conv.weight.add_(0.05 * torch.randn_like(trainer.model.wtm2.conv.weight))
    return trainer.save("adapted.pth")


@pytest.fixture(scope="module")
def teacher(synth_root, tmp_path_factory):
    """A second adapted model of another route (a 2-iteration AdaptSegNet run: no WTM, other weights)."""
    trainer = Trainer(tiny_cfg(synth_root, "adaptsegnet", iters=2), tmp_path_factory.mktemp("teacher"), progress=False)
    trainer.run()
    return trainer.save("teacher.pth")


MANY = 80


@pytest.fixture(scope="module")
def many_targets(tmp_path_factory):
    """A Cityscapes-format target tree of MANY train frames: writing their pseudo labels takes seconds, far longer
    than the Ctrl-C of `ctrl_c_once_written` takes to land once the first file is there."""
    root = tmp_path_factory.mktemp("many")
    generate(root, seed=1, counts={"gta5": 0, "synthia": 0, "cs_train": MANY, "cs_val": 0}, size=(128, 64),
             progress=False, workers=1)
    return root / "cityscapes"


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


@pytest.fixture(scope="module")
def pseudo(synth_root, adapted, tmp_path_factory):
    out = tmp_path_factory.mktemp("pseudo") / "pl"
    summary = make_pseudo_labels(adapted, synth_root / "cityscapes", out, PseudoLabelOptions(batch=4), **QUIET)
    return out, summary


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


def test_ctrl_c_while_a_round_writes_its_pseudo_labels_stops_the_round_resumably(synth_root, adapted, many_targets,
                                                                                   tmp_path):
    overrides = {"optim": {"iters": 1}, "run": {"save_every": 1, "eval_every": 1},
                 "data": {"target_root": str(many_targets), "val_root": str(synth_root / "cityscapes")}}
    pseudo_dir = tmp_path / "ssl" / "round1" / "pseudo"
    args = [sys.executable, "-m", "training.cli", "self-train", str(adapted), "--out", str(tmp_path / "ssl"),
            "--rounds", "1", "--iters", "1", "--no-progress", "--set", "run.save_every=1", "--set", "run.eval_every=1",
            "--set", f"data.target_root={many_targets}", "--set", f"data.val_root={synth_root / 'cityscapes'}"]
    returncode, output = ctrl_c_once_written(args, pseudo_dir)
    assert returncode == 130, output
    assert re.search("pseudo labels .* run the same command again", output) and "Traceback" not in output
    written = labels_in(pseudo_dir)
    assert 1 <= len(written) < MANY and not (tmp_path / "ssl" / "round1" / "train").exists()
    summary = self_train(adapted, tmp_path / "ssl", rounds=1, overrides=overrides, **QUIET)[0]
    assert len(labels_in(pseudo_dir)) == MANY and all(p.stat().st_mtime_ns == t for p, t in written.items())
    assert 0 < summary["pseudo"]["kept_total"] < 1 and (tmp_path / "ssl" / "round1" / "round.json").is_file()


@pytest.mark.parametrize("method,target_only,expected", [
    ("jal-wtm", False, {"seg1", "seg2", "seg1_tgt", "seg2_tgt", "adv1", "adv2", "jal", "adv_wtm1", "adv_wtm2", "d1",
                        "d2", "d_wtm"}),
    ("source-only", False, {"seg1", "seg2", "seg1_tgt", "seg2_tgt"}),
    # target-only: the pseudo labels alone, through the deployed target decoders; no source image is ever read
    ("jal-wtm", True, {"seg1_tgt", "seg2_tgt"}),
])
def test_self_training_adds_the_pseudo_label_loss_to_any_method(synth_root, adapted, pseudo, tmp_path, method,
                                                                target_only, expected):
    from training.runlog import LOSS_TERMS

    cfg = tiny_cfg(synth_root, method, iters=2)
    cfg.method.self_training, cfg.data.target_labels = True, str(pseudo[0])
    cfg.method.target_only = target_only
    if target_only:
        cfg.data.source_root = str(tmp_path / "no-source-tree")
    cfg.model.init = str(adapted)
    trainer = Trainer(cfg, tmp_path / method, progress=False)
    assert all(str(pseudo[0]) in str(s.label) for s in trainer.target_iter._dataset.samples)
    assert (trainer.source_iter is None) == target_only
    wtm_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "wtm" in k}
    trainer.run()
    row = read_rows(tmp_path / method / "train.csv")[-1]
    assert {t for t in LOSS_TERMS if row[t] != ""} == expected
    assert all(float(row[t]) > 0 for t in expected)
    if method == "jal-wtm":  # the WTM is trained by the target terms in either case
        after = trainer.model.state_dict()
        assert wtm_before and any(not torch.equal(v, after[k]) for k, v in wtm_before.items())


def test_target_only_rounds_noise_their_pseudo_labelled_images_with_the_labelled_stream_augmentation(
        synth_root, adapted, pseudo, tmp_path):
    """Photometric options apply to whichever stream is labelled: beside the source stream the target images
    stay as the teachers saw them; in a target-only round they are the labelled stream (Noisy Student)."""
    images = {}
    for target_only in (False, True):
        cfg = tiny_cfg(synth_root, "jal-wtm", iters=1)
        cfg.method.self_training, cfg.data.target_labels = True, str(pseudo[0])
        cfg.method.target_only = target_only
        cfg.data.rand_conv, cfg.data.rand_conv_kernels, cfg.data.rand_conv_mix = True, [1], False
        cfg.model.init = str(adapted)
        trainer = Trainer(cfg, tmp_path / str(target_only), progress=False)
        dataset = trainer.target_iter._dataset
        assert (dataset.style is not None) == target_only
        images[target_only] = np.asarray(dataset[0]["image"], dtype=np.float32)
    assert images[True].shape == images[False].shape
    assert np.abs(images[True] - images[False]).mean() > 0.05  # a random colour matrix, not the image as it is


def test_self_training_config_is_checked_and_resume_keeps_it(synth_root, pseudo, tmp_path):
    with pytest.raises(ConfigError, match="target_labels"):
        resolve("synthetic-tiny", {"method": {"self_training": True}})
    with pytest.raises(ConfigError, match="target_only.*self_training"):
        resolve("synthetic-tiny", {"method": {"target_only": True}})
    with pytest.raises(ConfigError, match="oracle"):
        resolve("synthetic-tiny", {"method": {"name": "oracle", "self_training": True},
                                   "data": {"target_labels": str(pseudo[0])}})
    Trainer(tiny_cfg(synth_root, "adaptsegnet", iters=2), tmp_path / "run", progress=False).run()
    cfg = tiny_cfg(synth_root, "adaptsegnet", iters=4)
    cfg.method.self_training, cfg.data.target_labels = True, str(pseudo[0])
    with pytest.raises(TrainingError, match="another model or method"):
        Trainer(cfg, tmp_path / "run", resume=True, progress=False)
    # a self-training run does not resume on the target alone (its streams and losses would change mid-run)
    Trainer(cfg, tmp_path / "ssl", progress=False).run()
    cfg.method.target_only = True
    with pytest.raises(TrainingError, match="another model or method"):
        Trainer(cfg, tmp_path / "ssl", resume=True, progress=False)


def test_rounds_run_end_to_end_and_resume(synth_root, adapted, teacher, tmp_path):
    overrides = {"optim": {"iters": 2}, "run": {"save_every": 2, "eval_every": 2}}
    logs = []
    options = PseudoLabelOptions(teachers=(str(teacher),))
    summaries = self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides, options=options, progress=False,
                           log=logs.append)
    assert [s["round"] for s in summaries] == [1, 2]
    r1, r2 = tmp_path / "ssl" / "round1", tmp_path / "ssl" / "round2"
    settings = [json.loads((r / "pseudo" / "pseudo_labels.json").read_text())["settings"] for r in (r1, r2)]
    assert settings[0]["teachers"] == [str(teacher.resolve())] and "teachers" not in settings[1]  # round 1 only
    assert [s["teachers"] for s in summaries] == [[str(teacher)], []]
    assert settings[1]["checkpoint"] == str((r1 / "train" / "checkpoints" / "last.pth").resolve())  # round 1's model
    assert json.loads((r1 / "train" / "config.json").read_text())["model"]["init"] == str(adapted)  # the student
    config = json.loads((r2 / "train" / "config.json").read_text())
    assert config["method"]["self_training"] and config["data"]["target_labels"] == str(r2 / "pseudo")
    assert config["model"]["init"] == str(r1 / "train" / "checkpoints" / "last.pth")
    assert 0 < summaries[0]["pseudo"]["kept_total"] < 1 and "19" in summaries[1]["eval"]
    provenance = load_trained(r2 / "train" / "checkpoints" / "last.pth")[1]["provenance"]
    assert provenance["self_training"] is True and provenance["method"] == "jal-wtm"
    assert "self_training" not in load_trained(adapted)[1]["provenance"]  # the adapted model it started from
    # A crash after round 2's training but before its marker: the same command finishes without retraining.
    (r2 / "round.json").unlink()
    before = (r2 / "train" / "checkpoints" / "last.pth").stat().st_mtime_ns
    logs.clear()
    again = self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides, options=options, progress=False,
                       log=logs.append)
    assert "finished earlier" in logs[0] and (r2 / "round.json").is_file()
    assert (r2 / "train" / "checkpoints" / "last.pth").stat().st_mtime_ns == before
    assert again[1]["checkpoint"] == summaries[1]["checkpoint"]
    # A moved rounds folder: the next round labels with round 1's model where it is now, not where it was.
    moved = tmp_path / "moved"
    (tmp_path / "ssl").rename(moved)
    shutil.rmtree(moved / "round2")
    self_train(adapted, moved, rounds=2, overrides=overrides, options=options, progress=False, log=logs.append)
    assert json.loads((moved / "round2" / "pseudo" / "pseudo_labels.json").read_text())["settings"]["checkpoint"] == \
        str((moved / "round1" / "train" / "checkpoints" / "last.pth").resolve())


def test_teachers_every_round_label_each_round_beside_its_student(synth_root, adapted, teacher, tmp_path):
    overrides = {"optim": {"iters": 1}, "run": {"save_every": 1, "eval_every": 1}}
    summaries = self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides,
                           options=PseudoLabelOptions(teachers=(str(teacher),)), teachers_every_round=True, **QUIET)
    r1, r2 = tmp_path / "ssl" / "round1", tmp_path / "ssl" / "round2"
    settings = [json.loads((r / "pseudo" / "pseudo_labels.json").read_text())["settings"] for r in (r1, r2)]
    assert [s["teachers"] for s in settings] == [[str(teacher.resolve())]] * 2
    assert [s["teachers"] for s in summaries] == [[str(teacher)]] * 2
    # round 2: round 1's student beside the teacher, and round 2 starts from that student
    assert settings[1]["checkpoint"] == str((r1 / "train" / "checkpoints" / "last.pth").resolve())
    assert json.loads((r2 / "train" / "config.json").read_text())["model"]["init"] == \
        str(r1 / "train" / "checkpoints" / "last.pth")
    # the same folder resumed without the option: round 2's labels were made otherwise, so it is refused
    (r2 / "round.json").unlink()
    with pytest.raises(PseudoLabelError, match="teachers"):
        self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides,
                   options=PseudoLabelOptions(teachers=(str(teacher),)), **QUIET)


def test_fresh_students_start_every_round_from_the_adapted_model_and_label_with_the_previous_one(
        synth_root, adapted, tmp_path):
    overrides = {"optim": {"iters": 1}, "run": {"save_every": 1, "eval_every": 1}, "method": {"target_only": True}}
    summaries = self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides, fresh_students=True, **QUIET)
    r1, r2 = tmp_path / "ssl" / "round1", tmp_path / "ssl" / "round2"
    student1 = r1 / "train" / "checkpoints" / "last.pth"
    labeller = json.loads((r2 / "pseudo" / "pseudo_labels.json").read_text())["settings"]["checkpoint"]
    assert labeller == str(student1.resolve())  # round 2 is labelled by round 1's student ...
    for r in (r1, r2):  # ... and trained from the adapted model, as round 1 is, target-only
        config = json.loads((r / "train" / "config.json").read_text())
        assert config["model"]["init"] == str(adapted) and config["method"]["target_only"] is True
    assert [s["student_from"] for s in summaries] == [str(adapted)] * 2
    assert summaries[1]["pseudo_from"] == str(student1)


def test_ssl_presets_inherit_their_base_and_resolve(tmp_path):
    bench, ssl = load_preset("synthetic-bench"), load_preset("synthetic-bench-ssl")
    assert ssl["model"]["arch"] == bench["model"]["arch"] and ssl["model"]["width"] == bench["model"]["width"]
    assert ssl["data"] == bench["data"] and (ssl["model"]["bn_mode"], ssl["model"]["target_bn_frames"]) == ("train", 200)
    assert ssl["method"]["self_training"] and ssl["method"]["lambda_adv2"] == bench["method"]["lambda_adv2"]
    for name, arch in (("gta5-cityscapes-r101-ssl", "deeplabv2-r101"),
                       ("gta5-cityscapes-vgg16-ssl", "deeplabv2-vgg16")):
        cfg = resolve(name, {"data": {"target_labels": "pl"}, "model": {"init": "adapted.pth"}})
        assert (cfg.model.arch, cfg.method.name, cfg.optim.stop_at, cfg.method.lambda_seg_target) == \
            (arch, "jal-wtm", 120000, 1.0)
        assert cfg.model.init_required and cfg.data.crop == (1024, 512)
    (tmp_path / "a.yaml").write_text("base: b\noptim:\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ConfigError, match="loops"):
        load_preset(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: synthetic-tiny\noptim:\n  lr: 0.5\n")
    cfg = resolve(str(tmp_path / "c.yaml"))
    assert cfg.optim.lr == 0.5 and cfg.optim.iters == load_preset("synthetic-tiny")["optim"]["iters"]


def test_self_train_cli_runs_a_round_and_says_what_to_run_next(adapted, teacher, tmp_path):
    args = ["self-train", str(adapted), "--out", str(tmp_path / "ssl"), "--rounds", "1", "--iters", "1",
            "--set", "run.save_every=1", "--set", "run.eval_every=1", "--flip", "--teacher", str(teacher),
            "--target-only", "--fresh-students", "--no-progress"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert "round 1: pseudo labels kept" in result.output and "precision" in result.output
    assert "jal-export" in result.output and (tmp_path / "ssl" / "round1" / "round.json").is_file()
    settings = json.loads((tmp_path / "ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())["settings"]
    assert settings["flip"] and settings["teachers"] == [str(teacher.resolve())]
    config = json.loads((tmp_path / "ssl" / "round1" / "train" / "config.json").read_text())
    assert config["method"]["target_only"] is True and config["method"]["self_training"] is True
    lone = CliRunner().invoke(train_main, ["self-train", str(adapted), "--out", str(tmp_path / "lone"),
                                           "--teachers-every-round", "--no-progress"])
    assert lone.exit_code == 2 and "needs at least one --teacher" in lone.output
    assert not (tmp_path / "lone").exists()  # refused before anything is written
