"""Self-training: the pseudo-label loss, target-only rounds, rounds end to end (teachers, fresh students, anchored
class shares), resume, presets, the CLI. The pseudo labels themselves: test_pseudo_labels.py."""
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.test_pseudo_labels import MANY, QUIET, assert_keeps_shares, ctrl_c_once_written, labels_in
from tests.test_training import read_rows, tiny_cfg
from training.checkpoints import load_trained
from training.cli import main as train_main
from training.config import ConfigError, load_preset, resolve
from training.engine import Trainer, TrainingError
from training.losses import rectified_seg_losses, seg_loss
from training.pseudo_labels import PseudoLabelError, PseudoLabelOptions, enet_weights, kept_shares
from training.self_training import self_train


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
    assert set(trainer.discs) == ({"d1", "d2", "d_wtm"} if "d1" in expected else set())  # only what is trained
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


def test_enet_class_weights_follow_the_shares_of_the_kept_pixels():
    # shares of all pixels; the weights use each class's share of the kept ones (here 60 % kept: 1/2, 1/6, 0, 1/3)
    weights = enet_weights(np.array([0.3, 0.1, 0.0, 0.2]))
    np.testing.assert_allclose(weights, [2.388285926447683, 5.84288746042373, 50.4983497918439, 3.3050128441227513])
    assert np.all(np.isfinite(enet_weights(np.zeros(3))))  # a tree that kept nothing: every class at the bound


def test_weighted_segmentation_loss_is_the_weighted_mean_over_labelled_pixels():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    weight = torch.tensor([0.5, 2.0, 8.0])
    nll = -torch.log_softmax(logits, 1).gather(1, labels.clamp(max=2)[:, None])[:, 0]
    w = torch.where(labels == 255, 0.0, weight[labels.clamp(max=2)])
    assert torch.allclose(seg_loss(logits, labels, weight), (w * nll).sum() / w.sum())
    assert torch.allclose(seg_loss(logits, labels, torch.full((3,), 7.0)), seg_loss(logits, labels))


def test_rectified_loss_discounts_each_pixel_by_how_much_the_two_decoders_dispute_it():
    torch.manual_seed(0)
    low, high, labels = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    weight = torch.tensor([0.5, 2.0, 8.0])
    # agreeing decoders: no discount, no KL, the plain (class-weighted) losses
    same = rectified_seg_losses(high, high, labels, weight)
    assert same["kl_tgt"].abs() < 1e-6
    assert torch.allclose(same["seg2_tgt"], seg_loss(high, labels, weight), atol=1e-6)
    # by hand: KL(p_high || p_low) per pixel, each pixel's cross-entropy times exp(-KL)
    p_high, p_low = torch.softmax(high, 1), torch.softmax(low, 1)
    kl = (p_high * (p_high.log() - p_low.log())).sum(1)
    valid = labels != 255
    safe = labels.clamp(max=2)[:, None]
    w = torch.where(valid, weight[labels.clamp(max=2)], 0.0)
    out = rectified_seg_losses(low, high, labels, weight)
    for key, logits in (("seg1_tgt", low), ("seg2_tgt", high)):
        nll = -torch.log_softmax(logits, 1).gather(1, safe)[:, 0]
        assert torch.allclose(out[key], (w * nll * torch.exp(-kl)).sum() / w.sum(), atol=1e-6), key
    assert torch.allclose(out["kl_tgt"], kl[valid].mean(), atol=1e-6) and out["kl_tgt"] > 0.1
    assert out["seg2_tgt"] < seg_loss(high, labels, weight)  # every disputed pixel weighs less than 1
    # the logits of a real network are smaller than the labels: upsampled first, as seg_loss does
    small = rectified_seg_losses(low[..., :2, :3], high[..., :2, :3], labels)
    assert all(torch.isfinite(v) for v in small.values())
    # a batch of rejected pixels only: zero losses that still backpropagate
    low.requires_grad_(True)
    empty = rectified_seg_losses(low, high, torch.full_like(labels, 255))
    assert all(float(v.detach()) == 0.0 for v in empty.values())
    sum(empty.values()).backward()
    assert low.grad is not None


def test_rectified_rounds_log_the_decoders_disagreement_and_keep_it_on_resume(synth_root, adapted, pseudo, tmp_path):
    cfg = tiny_cfg(synth_root, "jal-wtm", iters=2)
    cfg.method.self_training, cfg.data.target_labels, cfg.model.init = True, str(pseudo[0]), str(adapted)
    cfg.method.pseudo_rectify = True
    Trainer(cfg, tmp_path / "rect", progress=False).run()
    row = read_rows(tmp_path / "rect" / "train.csv")[-1]
    assert all(float(row[t]) > 0 for t in ("seg1_tgt", "seg2_tgt", "kl_tgt"))
    cfg.method.pseudo_rectify = False  # the rectification is part of what the run trains: no silent switch
    with pytest.raises(TrainingError, match="another model or method .*rectified pseudo-label loss"):
        Trainer(cfg, tmp_path / "rect", resume=True, progress=False)
    Trainer(cfg, tmp_path / "plain", progress=False).run()
    assert read_rows(tmp_path / "plain" / "train.csv")[-1]["kl_tgt"] == ""
    with pytest.raises(ConfigError, match="pseudo_rectify.*self_training"):
        resolve("synthetic-tiny", {"method": {"pseudo_rectify": True}})


def test_class_weighted_rounds_weight_the_pseudo_label_loss_by_the_trees_own_shares(synth_root, adapted, pseudo,
                                                                                   tmp_path):
    out, summary = pseudo
    cfg = tiny_cfg(synth_root, "jal-wtm", iters=2)
    cfg.method.self_training, cfg.data.target_labels, cfg.model.init = True, str(out), str(adapted)
    assert Trainer(cfg, tmp_path / "plain", progress=False).pseudo_weights is None
    cfg.method.pseudo_class_weights = "enet"
    trainer = Trainer(cfg, tmp_path / "enet", progress=False)
    expected = enet_weights(kept_shares(summary))
    np.testing.assert_allclose(trainer.pseudo_weights.numpy(), expected, rtol=1e-6)
    assert expected.max() / expected.min() > 2  # the synthetic labels are unbalanced: the weights differ
    trainer.run()
    row = read_rows(tmp_path / "enet" / "train.csv")[-1]
    assert all(np.isfinite(float(row[t])) and float(row[t]) > 0 for t in ("seg1_tgt", "seg2_tgt"))
    cfg.method.pseudo_class_weights = "none"  # the weights are part of what the run trains: no silent switch
    with pytest.raises(TrainingError, match="another model or method .*pseudo-label class weights enet"):
        Trainer(cfg, tmp_path / "enet", resume=True, progress=False)
    cfg.method.pseudo_class_weights = "enet"
    with pytest.raises(ConfigError, match="pseudo_class_weights must be one of none, enet"):
        resolve("synthetic-tiny", {"method": {"pseudo_class_weights": "median"}})
    with pytest.raises(ConfigError, match="pseudo_class_weights.*self_training"):
        resolve("synthetic-tiny", {"method": {"pseudo_class_weights": "enet"}})
    bare = tmp_path / "bare"  # a label tree without its summary: the weights have nothing to come from
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("pseudo_labels.json"))
    cfg.data.target_labels = str(bare)
    with pytest.raises(TrainingError, match="data.target_labels .*pseudo_labels.json: not a readable"):
        Trainer(cfg, tmp_path / "bare-run", progress=False)


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


def test_anchored_rounds_keep_round_one_class_shares(synth_root, adapted, tmp_path):
    out = tmp_path / "ssl"
    args = ["self-train", str(adapted), "--out", str(out), "--rounds", "2", "--iters", "1", "--set", "run.save_every=1",
            "--set", "run.eval_every=1", "--target-only", "--anchor-shares", "--no-progress"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    r1, r2 = (json.loads((out / f"round{k}" / "pseudo" / "pseudo_labels.json").read_text()) for k in (1, 2))
    assert "class_shares" not in r1["settings"]  # round 1: the percentile
    assert r2["settings"]["class_shares"] == str((out / "round1" / "pseudo" / "pseudo_labels.json").resolve())
    assert r2["settings"]["checkpoint"] == str((out / "round1" / "train" / "checkpoints" / "last.pth").resolve())
    assert_keeps_shares(r2, r1, pixels=6 * 64 * 128)


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
            "--target-only", "--fresh-students", "--class-weights", "enet", "--rectify", "--no-progress"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert "round 1: pseudo labels kept" in result.output and "precision" in result.output
    assert "jal-export" in result.output and (tmp_path / "ssl" / "round1" / "round.json").is_file()
    settings = json.loads((tmp_path / "ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())["settings"]
    assert settings["flip"] and settings["teachers"] == [str(teacher.resolve())]
    config = json.loads((tmp_path / "ssl" / "round1" / "train" / "config.json").read_text())
    assert config["method"]["target_only"] is True and config["method"]["self_training"] is True
    assert config["method"]["pseudo_class_weights"] == "enet" and config["method"]["pseudo_rectify"] is True
    lone = CliRunner().invoke(train_main, ["self-train", str(adapted), "--out", str(tmp_path / "lone"),
                                           "--teachers-every-round", "--no-progress"])
    assert lone.exit_code == 2 and "needs at least one --teacher" in lone.output
    assert not (tmp_path / "lone").exists()  # refused before anything is written
