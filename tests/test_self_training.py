"""Self-training: the pseudo-label loss, the rectified loss, rounds end to end, resume, presets, the CLI, configs of
earlier versions. The pseudo labels themselves: test_pseudo_labels.py."""
import json
import re
import shutil
import sys

import pytest
import torch
from click.testing import CliRunner

from tests.test_pseudo_labels import MANY, QUIET, ctrl_c_once_written, labels_in
from tests.test_training import read_rows, tiny_cfg
from training.checkpoints import load_trained
from training.cli import main as train_main
from training.config import ConfigError, from_dict, load_preset, parse_set, resolve
from training.engine import Trainer, TrainingError
from training.losses import rectified_seg_losses, seg_loss
from training.self_training import round_config, self_train


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


@pytest.mark.parametrize("method,expected", [
    ("jal-wtm", {"seg1", "seg2", "seg1_tgt", "seg2_tgt", "adv1", "adv2", "jal", "adv_wtm1", "adv_wtm2", "d1", "d2",
                 "d_wtm"}),
    ("source-only", {"seg1", "seg2", "seg1_tgt", "seg2_tgt"}),
])
def test_self_training_adds_the_pseudo_label_loss_to_any_method(synth_root, adapted, pseudo, tmp_path, method,
                                                                expected):
    from training.runlog import LOSS_TERMS

    cfg = tiny_cfg(synth_root, method, iters=2)
    cfg.method.self_training, cfg.data.target_labels = True, str(pseudo[0])
    cfg.model.init = str(adapted)
    trainer = Trainer(cfg, tmp_path / method, progress=False)
    assert set(trainer.discs) == ({"d1", "d2", "d_wtm"} if "d1" in expected else set())  # only what is trained
    assert all(str(pseudo[0]) in str(s.label) for s in trainer.target_iter._dataset.samples)
    wtm_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "wtm" in k}
    trainer.run()
    row = read_rows(tmp_path / method / "train.csv")[-1]
    assert {t for t in LOSS_TERMS if row[t] != ""} == expected
    assert all(float(row[t]) > 0 for t in expected)
    if method == "jal-wtm":  # the WTM is trained by the target terms in either case
        after = trainer.model.state_dict()
        assert wtm_before and any(not torch.equal(v, after[k]) for k, v in wtm_before.items())


def test_rectified_loss_discounts_each_pixel_by_how_much_the_two_decoders_dispute_it():
    torch.manual_seed(0)
    low, high, labels = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    # agreeing decoders: no discount, no KL, the plain losses
    same = rectified_seg_losses(high, high, labels)
    assert same["kl_tgt"].abs() < 1e-6
    assert torch.allclose(same["seg2_tgt"], seg_loss(high, labels), atol=1e-6)
    # by hand: KL(p_high || p_low) per pixel, each pixel's cross-entropy times exp(-KL)
    p_high, p_low = torch.softmax(high, 1), torch.softmax(low, 1)
    kl = (p_high * (p_high.log() - p_low.log())).sum(1)
    valid = labels != 255
    safe = labels.clamp(max=2)[:, None]
    out = rectified_seg_losses(low, high, labels)
    for key, logits in (("seg1_tgt", low), ("seg2_tgt", high)):
        nll = -torch.log_softmax(logits, 1).gather(1, safe)[:, 0]
        assert torch.allclose(out[key], (nll * torch.exp(-kl))[valid].mean(), atol=1e-6), key
    assert torch.allclose(out["kl_tgt"], kl[valid].mean(), atol=1e-6) and out["kl_tgt"] > 0.1
    assert out["seg2_tgt"] < seg_loss(high, labels)  # every disputed pixel weighs less than 1
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


def test_self_training_config_is_checked_and_resume_keeps_it(synth_root, pseudo, tmp_path):
    with pytest.raises(ConfigError, match="target_labels"):
        resolve("synthetic-tiny", {"method": {"self_training": True}})
    with pytest.raises(ConfigError, match="oracle"):
        resolve("synthetic-tiny", {"method": {"name": "oracle", "self_training": True},
                                   "data": {"target_labels": str(pseudo[0])}})
    Trainer(tiny_cfg(synth_root, "adaptsegnet", iters=2), tmp_path / "run", progress=False).run()
    cfg = tiny_cfg(synth_root, "adaptsegnet", iters=4)
    cfg.method.self_training, cfg.data.target_labels = True, str(pseudo[0])
    with pytest.raises(TrainingError, match="another model or method"):
        Trainer(cfg, tmp_path / "run", resume=True, progress=False)


def test_rounds_run_end_to_end_and_resume(synth_root, adapted, tmp_path):
    overrides = {"optim": {"iters": 2}, "run": {"save_every": 2, "eval_every": 2}}
    logs = []
    summaries = self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides, progress=False, log=logs.append)
    assert [s["round"] for s in summaries] == [1, 2]
    r1, r2 = tmp_path / "ssl" / "round1", tmp_path / "ssl" / "round2"
    settings = [json.loads((r / "pseudo" / "pseudo_labels.json").read_text())["settings"] for r in (r1, r2)]
    assert settings[0]["checkpoint"] == str(adapted.resolve())
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
    again = self_train(adapted, tmp_path / "ssl", rounds=2, overrides=overrides, progress=False, log=logs.append)
    assert "finished earlier" in logs[0] and (r2 / "round.json").is_file()
    assert (r2 / "train" / "checkpoints" / "last.pth").stat().st_mtime_ns == before
    assert again[1]["checkpoint"] == summaries[1]["checkpoint"]
    # A moved rounds folder: the next round labels with round 1's model where it is now, not where it was.
    moved = tmp_path / "moved"
    (tmp_path / "ssl").rename(moved)
    shutil.rmtree(moved / "round2")
    self_train(adapted, moved, rounds=2, overrides=overrides, progress=False, log=logs.append)
    assert json.loads((moved / "round2" / "pseudo" / "pseudo_labels.json").read_text())["settings"]["checkpoint"] == \
        str((moved / "round1" / "train" / "checkpoints" / "last.pth").resolve())


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


def test_self_train_cli_runs_a_round_and_says_what_to_run_next(adapted, tmp_path):
    args = ["self-train", str(adapted), "--out", str(tmp_path / "ssl"), "--rounds", "1", "--iters", "1",
            "--set", "run.save_every=1", "--set", "run.eval_every=1", "--flip", "--rectify", "--no-progress"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert "round 1: pseudo labels kept" in result.output and "precision" in result.output
    assert "jal-export" in result.output and (tmp_path / "ssl" / "round1" / "round.json").is_file()
    settings = json.loads((tmp_path / "ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())["settings"]
    assert settings["flip"]
    config = json.loads((tmp_path / "ssl" / "round1" / "train" / "config.json").read_text())
    assert config["method"]["self_training"] is True and config["method"]["pseudo_rectify"] is True
    removed = CliRunner().invoke(train_main, ["self-train", str(adapted), "--out", str(tmp_path / "removed"),
                                              "--target-only", "--no-progress"])
    assert removed.exit_code == 2 and "--target-only" in removed.output
    assert not (tmp_path / "removed").exists()  # refused before anything is written


def test_self_train_help_fits_one_screen():
    result = CliRunner().invoke(train_main, ["self-train", "--help"], terminal_width=100)
    assert result.exit_code == 0 and len(result.output.splitlines()) <= 40, result.output


OLD_METHOD_KEYS = {"target_only": False, "pseudo_class_weights": "none", "mix": "none", "mix_ema": 0.99,
                   "mix_confidence": 0.968, "lambda_mix": 1.0}  # what earlier versions saved in every config


def test_configs_of_earlier_versions_load_without_their_removed_keys_and_refuse_them_switched_on(synth_root, adapted,
                                                                                               tmp_path):
    """Checkpoints and run folders saved before the rejected variants were removed hold their keys at the defaults:
    they still export, label, start a round and resume; one that switched a variant on is refused by name."""
    state = torch.load(adapted, map_location="cpu", weights_only=True)
    state["config"]["method"].update(OLD_METHOD_KEYS)
    state["teacher"] = {"model": state["model"], "steps": 2}  # a ClassMix run's extra state is ignored
    old = tmp_path / "old.pth"
    torch.save(state, old)
    assert load_trained(old)[1]["provenance"]["method"] == "jal-wtm"  # what export and pseudo-label read
    assert round_config(old, tmp_path / "pl").method.self_training  # a round from it, without a preset
    assert from_dict(state["config"]).to_dict() == from_dict(torch.load(adapted, weights_only=True)["config"]).to_dict()
    for key, value in (("mix", "classmix"), ("target_only", True), ("pseudo_class_weights", "enet")):
        with pytest.raises(ConfigError, match=f"method.{key}={value} was removed in this version"):
            from_dict({**state["config"], "method": {**state["config"]["method"], key: value}})
    # a run folder of an earlier version resumes
    cfg = tiny_cfg(synth_root, "source-only", iters=1)
    Trainer(cfg, tmp_path / "run", progress=False).run()
    last = tmp_path / "run" / "checkpoints" / "last.pth"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    saved["config"]["method"].update(OLD_METHOD_KEYS)
    torch.save(saved, last)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["method"].update(OLD_METHOD_KEYS)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    resumed = CliRunner().invoke(train_main, ["--out", str(tmp_path / "run"), "--resume", "--iters", "2",
                                              "--no-progress"])
    assert resumed.exit_code == 0 and "Finished at iteration 2" in resumed.output, resumed.output
    # on the command line a removed key is an unknown one
    with pytest.raises(ConfigError, match="unknown config key 'method.target_only': it was removed"):
        resolve("synthetic-tiny", parse_set(["method.target_only=true"]))
    refused = CliRunner().invoke(train_main, ["--preset", "synthetic-tiny", "--out", str(tmp_path / "new"),
                                              "--set", "method.mix=classmix"])
    assert refused.exit_code == 1 and "unknown config key 'method.mix'" in refused.output
    assert not (tmp_path / "new").exists()
