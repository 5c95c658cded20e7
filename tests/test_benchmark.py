"""The synthetic benchmark's baselines and its ablation script (the real table is a benchmark, not a test)."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from jal_deploy.datasets import find_samples, read_label
from jal_deploy.datasets.writers import write_image, write_raw_label
from jal_deploy.labels import TRAINID_TO_ID
from training.baselines import layout_prior, prior_scores

from tests.test_training import ctrl_c_once_training

ROOT = Path(__file__).resolve().parents[1]


def _write_cityscapes_val(root: Path, labels: list[np.ndarray]) -> None:
    for i, train_ids in enumerate(labels):
        stem = f"ulm_000000_{i:06d}"
        write_image(root / "leftImg8bit" / "val" / "ulm" / f"{stem}_leftImg8bit.png",
                    np.zeros((*train_ids.shape, 3), np.uint8))
        write_raw_label(root / "gtFine" / "val" / "ulm" / f"{stem}_gtFine_labelIds.png", TRAINID_TO_ID[train_ids],
                        "cityscapes")


def test_layout_prior_is_the_per_pixel_mode_of_the_source_labels(synth_root):
    prior = layout_prior(synth_root / "gta5", "gta5", size=(32, 16))
    stack = np.stack([read_label(s, "gta5") for s in find_samples(synth_root / "gta5", "gta5")])
    assert prior.shape == (16, 32) and prior.dtype == np.uint8
    assert prior[-1, 16] == 0 and prior[0, 16] == 10  # road at the bottom, sky at the top
    assert set(np.unique(prior)) <= set(np.unique(stack[stack != 255]))


def test_prior_scores_a_known_split_exactly(tmp_path):
    road_sky = np.zeros((4, 6), np.uint8)
    road_sky[:2] = 10
    _write_cityscapes_val(tmp_path, [road_sky, np.full((4, 6), 13, np.uint8)])
    cm = prior_scores(road_sky, tmp_path)
    # frame 1 is all car: 12 of its pixels are predicted road, 12 sky; frame 0 is exactly the prior
    iou = cm.iou()
    assert iou[10] == pytest.approx(12 / 24) and iou[0] == pytest.approx(12 / 24) and iou[13] == 0.0
    assert cm.miou() == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def _bench(out, *args):
    cmd = [sys.executable, str(ROOT / "bench/synthetic_ablation.py"), "--out", str(out), "--quick", "--threads", "1",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_quick_ablation_prints_every_baseline_resumes_and_refuses_another_protocol(tmp_path):
    rows = ["prior", "source-only", "jal-wtm", "oracle"]
    first = _bench(tmp_path, "--seeds", "0", "--rows", *rows)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["rows"]) == {*rows, "source-only@source-val", "adabn@pretraining"}
    assert summary["protocol"]["eval_seed"] != summary["protocol"]["data_seed"]  # held-out val
    jal = summary["rows"]["jal-wtm"]
    so, oracle = summary["rows"]["source-only"]["mean"], summary["rows"]["oracle"]["mean"]
    assert jal["gap_closed"] == [pytest.approx((jal["mean"] - so) / (oracle - so))]
    for row in rows:
        assert f"\n{row} " in first.stdout and 0 <= summary["rows"][row]["mean"] <= 100
    assert "gap closed" in first.stdout and ("AVX2" in first.stdout or "instruction sets unknown" in first.stdout)
    assert (tmp_path / "seed0" / "pretrain-oracle" / "result.json").is_file()
    # the pretraining curves: each pretraining's target mIoU at its evaluations, with the minutes so far
    curves = summary["per_seed"]["0"]["curves"]
    assert set(curves) == {"pretrain", "pretrain-oracle"} and [it for it, _ in curves["pretrain-oracle"]["evals"]] == [3]
    oracle_end = 100 * curves["pretrain-oracle"]["evals"][-1][1]
    assert "seed 0 pretrain-oracle" in first.stdout and f"3: {oracle_end:.1f} (" in first.stdout
    # a pretraining keeps a checkpoint at each evaluation to resume from, only the newest
    assert [p.name for p in (tmp_path / "seed0" / "pretrain" / "checkpoints").glob("iter_*.pth")] == ["iter_0000003.pth"]
    # label-free selection: each criterion's pick scored, judged against last and the best by labels
    picks = summary["per_seed"]["0"]["selection"]
    assert set(picks["jal-wtm"]) == {"snapshots", "d-prob", "d-ref", "entropy", "last", "best-by-labels"}
    assert not {"d-prob", "d-ref"} & set(picks["source-only"]) and picks["jal-wtm"]["snapshots"] == 2  # its 1 and 2
    assert picks["jal-wtm"]["last"]["iteration"] == 2
    for row in ("source-only", "jal-wtm", "oracle"):
        best = picks[row]["best-by-labels"]["miou"]
        assert all(v["miou"] <= best for k, v in picks[row].items() if k != "snapshots")
    assert "label-free selection" in first.stdout and "best-by-labels" in first.stdout
    killed = tmp_path / "seed0" / "jal-wtm" / "result.json"  # as if killed after its last save, before this file
    lost, last = json.loads(killed.read_text()), tmp_path / "seed0" / "jal-wtm" / "checkpoints" / "last.pth"
    killed.unlink()
    saved_at = last.stat().st_mtime_ns
    again = _bench(tmp_path, "--seeds", "0", "--rows", *rows)  # everything finished: nothing retrains
    assert again.returncode == 0 and "iter " not in again.stdout, again.stderr[-2000:]
    rebuilt = json.loads(killed.read_text())
    assert rebuilt["evals"] == lost["evals"] and abs(rebuilt["seconds"] - lost["seconds"]) < 5
    assert last.stat().st_mtime_ns == saved_at
    rerun = json.loads((tmp_path / "summary.json").read_text())
    assert rerun["rows"] == summary["rows"]
    summary = rerun  # the same but the rebuilt run's wall seconds (those of its last save)
    subset = _bench(tmp_path, "--seeds", "0", "--rows", "prior", "oracle", "--report")  # a table of two rows ...
    assert subset.returncode == 0 and "\njal-wtm " not in subset.stdout and "\noracle " in subset.stdout
    kept = json.loads((tmp_path / "summary.json").read_text())  # ... keeps every finished row in the file
    assert kept["rows"] == summary["rows"] and kept["per_seed"] == summary["per_seed"]
    bare = subprocess.run([sys.executable, str(ROOT / "bench/synthetic_ablation.py"), "--out", str(tmp_path),
                           "--seeds", "0", "--rows", *rows, "--report"],  # no protocol flag repeated, not --quick
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bare.returncode == 0 and "iter " not in bare.stdout, bare.stderr[-2000:]
    assert all(f"\n{row} " in bare.stdout for row in rows)
    other = _bench(tmp_path, "--seeds", "0", "--rows", *rows, "--adapt-iters", "5")
    assert other.returncode != 0 and "another protocol" in other.stderr
    saved = tmp_path / "protocol.json"  # a field this Protocol no longer has: refused with a message, no traceback
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "retired_field": 1}))
    stale = _bench(tmp_path, "--seeds", "0", "--rows", *rows, "--report")
    assert stale.returncode != 0 and "another protocol" in stale.stderr and "Traceback" not in stale.stderr


def test_coarse_to_fine_protocol_pretrains_every_baseline_at_half_size_first(tmp_path):
    result = _bench(tmp_path, "--seeds", "0", "--rows", "prior", "source-only", "cr", "oracle", "--coarse-iters", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 at half size + 3 pretraining" in result.stdout
    seed = tmp_path / "seed0"
    for pre in ("pretrain", "pretrain-oracle", "pretrain-cr"):  # every pretraining: the same budget for each row
        coarse = json.loads((seed / f"{pre}-coarse" / "config.json").read_text())
        fine = json.loads((seed / pre / "config.json").read_text())
        assert coarse["optim"]["iters"] == 4 and fine["optim"]["iters"] == 3
        assert coarse["data"]["source_size"] == [48, 24] and fine["data"]["source_size"] == [96, 48]  # QUICK: 96x48
        assert coarse["data"]["target_size"] == [48, 24] and coarse["method"] == fine["method"]
        assert coarse["data"].get("rand_conv", False) == (pre == "pretrain-cr")
        assert fine["model"]["init"] == str(seed / f"{pre}-coarse" / "checkpoints" / "last.pth")
    # the second stage starts from the full-size part, which started from the coarse one
    assert json.loads((seed / "cr" / "config.json").read_text())["model"]["init"] == str(
        seed / "pretrain-cr" / "checkpoints" / "last.pth")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"]["coarse_iters"] == 4 and "cr@source-val" in summary["rows"]
    other = _bench(tmp_path, "--seeds", "0", "--rows", "prior", "--coarse-iters", "0")
    assert other.returncode != 0 and "another protocol" in other.stderr


def test_warm_started_colour_randomised_pretraining_continues_the_source_only_one(tmp_path):
    result = _bench(tmp_path, "--seeds", "0", "--rows", "prior", "cr", "--cr-warm-iters", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 pretraining (cr: 4 colour-randomised iterations from source-only's)" in result.stdout
    seed = tmp_path / "seed0"
    plain = json.loads((seed / "pretrain" / "config.json").read_text())  # trained first, though not a row here
    warm = json.loads((seed / "pretrain-cr" / "config.json").read_text())
    assert plain["optim"]["iters"] == 3 and not plain["data"].get("rand_conv", False)
    assert warm["optim"]["iters"] == 4 and warm["data"]["rand_conv"] is True
    assert warm["model"]["init"] == str(seed / "pretrain" / "checkpoints" / "last.pth")
    assert json.loads((seed / "pretrain-cr" / "result.json").read_text())["evals"][-1][0] == 4  # (iteration, mIoU)
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert {"cr", "cr@pretraining", "cr+adabn@pretraining", "cr@source-val"} <= set(rows)
    assert "source-only" not in rows  # its pretraining is the cr route's start, not a row of this call


def test_warm_start_can_run_coarse_to_fine_its_half_size_part_first(tmp_path):
    result = _bench(tmp_path, "--seeds", "0", "--rows", "prior", "cr+jal-wtm", "--cr-warm-iters", "2",
                    "--cr-warm-coarse-iters", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(cr: 4 at half size + 2 colour-randomised iterations from source-only's)" in result.stdout
    seed = tmp_path / "seed0"
    coarse = json.loads((seed / "pretrain-cr-coarse" / "config.json").read_text())
    fine = json.loads((seed / "pretrain-cr" / "config.json").read_text())
    assert coarse["model"]["init"] == str(seed / "pretrain" / "checkpoints" / "last.pth")  # from source-only's
    assert coarse["optim"]["iters"] == 4 and coarse["data"]["source_size"] == [48, 24]  # QUICK: 96x48
    assert coarse["data"]["rand_conv"] is True and fine["data"]["rand_conv"] is True
    assert fine["optim"]["iters"] == 2 and fine["data"]["source_size"] == [96, 48]
    assert fine["model"]["init"] == str(seed / "pretrain-cr-coarse" / "checkpoints" / "last.pth")
    assert not (seed / "pretrain-coarse").exists()  # the plain pretraining stays full size (no --coarse-iters)
    # the colour-blind pretraining is scored on held-out source frames for any cr row, not only for `cr` itself
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert "cr@source-val" in rows and "cr" not in rows
    assert rows["cr@source-val"]["mean"] == json.loads((seed / "pretrain-cr" / "source_val.json").read_text())
    alone = _bench(tmp_path / "alone", "--seeds", "0", "--rows", "prior", "--cr-warm-coarse-iters", "4")
    assert alone.returncode != 0 and "give --cr-warm-iters too" in alone.stderr and "Traceback" not in alone.stderr


def test_second_stage_study_starts_from_another_folders_pretrainings_and_only_reads_them(tmp_path):
    first, study = tmp_path / "first", tmp_path / "study"
    assert _bench(first, "--seeds", "0", "--rows", "source-only", "cr").returncode == 0
    before = {f: f.stat().st_mtime_ns for f in first.rglob("*")}
    result = _bench(study, "--seeds", "0", "--rows", "cr", "cr+jal-wtm", "--pretrained", str(first),
                    "--adapt-lr", "0.001", "--eval-seed", "77")
    assert result.returncode == 0, result.stderr[-2000:]
    assert {f: f.stat().st_mtime_ns for f in first.rglob("*")} == before  # nothing there written or retrained
    assert not (study / "seed0" / "pretrain-cr" / "checkpoints").exists()
    assert sorted(d.name for d in (study / "data").iterdir()) == ["eval-seed77"]  # the training frames are first's
    config = json.loads((study / "seed0" / "cr+jal-wtm" / "config.json").read_text())
    assert config["model"]["init"] == str(first / "seed0" / "pretrain-cr" / "checkpoints" / "last.pth")
    assert config["optim"]["lr"] == 0.001 and config["data"]["source_root"].startswith(str(first / "data"))
    assert config["data"]["val_root"] == str(study / "data" / "eval-seed77" / "cityscapes")
    # the pretraining's own scores, on this folder's val and kept here
    rows = json.loads((study / "summary.json").read_text())["rows"]
    kept = study / "seed0" / "pretrain-cr"
    assert rows["cr@pretraining"]["mean"] == json.loads((kept / "own_stats.json").read_text())["miou"]
    assert rows["cr+adabn@pretraining"]["mean"] == json.loads((kept / "target_stats.json").read_text())["miou"]
    assert (kept / "source_val.json").is_file()
    other = _bench(tmp_path / "other", "--seeds", "0", "--rows", "cr", "--pretrained", str(first),
                   "--pretrain-iters", "5")
    assert other.returncode != 0 and "pretrain_iters" in other.stderr and "Traceback" not in other.stderr


def test_ctrl_c_stops_the_bench_before_a_row_builds_on_the_half_trained_pretraining(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench/synthetic_ablation.py"), "--out", str(tmp_path), "--quick", "--threads",
           "1", "--seeds", "0", "--rows", "source-only", "adabn", "--pretrain-iters", "2000"]
    pre = tmp_path / "seed0" / "pretrain"
    returncode, _, err = ctrl_c_once_training(cmd, pre / "train.csv", cwd=ROOT)
    assert returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err and "Traceback" not in err
    state = torch.load(pre / "checkpoints" / "last.pth", weights_only=True)
    assert 1 <= state["iteration"] < 2000 and not (pre / "result.json").exists()
    assert not (tmp_path / "seed0" / "source-only").exists() and not (tmp_path / "seed0" / "adabn").exists()
    assert not (pre / "target_stats.json").exists()


def test_gpu_ablation_runs_seeds_side_by_side_and_reports_one_table(tmp_path):
    env = {**os.environ, "ABLATION_SEEDS": "0 1", "ABLATION_ROWS": "prior source-only adabn | cr"}
    rows = ["prior", "source-only", "adabn", "cr", "oracle"]
    result = subprocess.run(["bash", str(ROOT / "bench/gpu_ablation.sh"), str(tmp_path), "240", "--quick",
                             "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["rows"]) == {*rows, "source-only@source-val", "cr@source-val", "cr@pretraining",
                                    "adabn@pretraining", "cr+adabn@pretraining"}
    assert [len(summary["rows"][r]["per_seed"]) for r in rows] == [2, 2, 2, 2, 2]
    assert not (tmp_path / "seed0" / "jal-wtm").exists()  # the rows reached every process
    assert (tmp_path / "seed1-oracle.log").is_file()  # the oracle trained beside the other rows ...
    assert "seed 1 cr " in (tmp_path / "seed1-group1.log").read_text()  # ... and so did each group of rows
    assert "seed 1 cr " not in (tmp_path / "seed1-group0.log").read_text()
    adabn = json.loads((tmp_path / "seed1" / "adabn" / "config.json").read_text())["model"]
    assert (adabn["bn_mode"], adabn["target_bn_frames"]) == ("train", 200)
    for row in ("source-only", "oracle"):  # baselines continue as pretrained: batch statistics, no target frames
        model = json.loads((tmp_path / "seed1" / row / "config.json").read_text())["model"]
        assert (model["bn_mode"], model["target_bn_frames"]) == ("train", 0)
    assert "seed 1 adabn " in result.stdout and "gap closed" in result.stdout


def test_quick_pipeline_rows_stack_fda_and_self_training_rounds_on_jal_wtm(tmp_path):
    rows = ["prior", "source-only", "jal-wtm+fda+ssl2", "jal-wtm+fda+sp+ssl1", "jal-wtm+sp+ssl1", "adaptsegnet+onehot",
            "cr", "cr+jal-wtm+sp+ssl1", "cr+jal-wtm+sp+flip+ssl1", "cr+jal-wtm+sp+all+ssl1", "cr+sp+flip+ssl1",
            "cr+jal-wtm+ens+sp+tgt+ssl1", "oracle"]
    result = _bench(tmp_path, "--seeds", "0", "--rows", *rows)
    assert result.returncode == 0, result.stderr[-2000:]
    seed = tmp_path / "seed0"
    method = json.loads((seed / "adaptsegnet+onehot" / "config.json").read_text())["method"]
    assert (method["name"], method["d_input"]) == ("adaptsegnet", "onehot")
    assert json.loads((seed / "jal-wtm" / "config.json").read_text())["method"]["d_input"] == "softmax"
    assert json.loads((seed / "jal-wtm+fda" / "config.json").read_text())["data"]["fda_beta"] == 0.01
    for k in (1, 2):  # round 2 labels with round 1's model, which started from the FDA-adapted one
        summary = json.loads((seed / "jal-wtm+fda+ssl" / f"round{k}" / "round.json").read_text())
        assert summary["pseudo_from"].endswith(("jal-wtm+fda/checkpoints/last.pth", "round1/train/checkpoints/last.pth")[k - 1])
    info = json.loads((tmp_path / "summary.json").read_text())["per_seed"]["0"]["info"]["jal-wtm+fda+ssl2"]
    assert 0 < info["pseudo"]["kept_total"] <= 1 and 0 <= info["pseudo"]["precision"]["overall"] <= 1
    assert "jal-wtm+fda+ssl2 pseudo labels: kept" in result.stdout
    picks = json.loads((tmp_path / "summary.json").read_text())["per_seed"]["0"]["selection"]["jal-wtm+fda+ssl2"]
    assert picks["snapshots"] >= 2 and "d-prob" in picks  # chosen among the last round's snapshots
    # +sp: the same adapted model, its own rounds, pseudo labels weighted by the source spatial prior (CBST-SP)
    sp = json.loads((seed / "jal-wtm+fda+sp+ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())
    plain = json.loads((seed / "jal-wtm+fda+ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())
    assert sp["settings"]["spatial_prior"] is True and "spatial_prior" not in plain["settings"]
    assert sp["settings"]["checkpoint"] == plain["settings"]["checkpoint"]
    assert "seed 0 jal-wtm+fda+sp+ssl1 target mIoU" in result.stdout
    # without FDA: the rounds start from JAL+WTM itself, on unstyled source frames
    nofda = json.loads((seed / "jal-wtm+sp+ssl" / "round1" / "round.json").read_text())
    assert nofda["pseudo_from"].endswith("seed0/jal-wtm/checkpoints/last.pth")
    assert json.loads((seed / "jal-wtm+sp+ssl" / "round1" / "train" / "config.json").read_text())["data"]["fda_beta"] == 0
    assert "seed 0 jal-wtm+sp+ssl1 target mIoU" in result.stdout
    # cr: its own source pretraining under a random colour matrix per image, kept in every later stage
    randomised = {"rand_conv": True, "rand_conv_kernels": [1], "rand_conv_mix": False}
    for stage in ("pretrain-cr", "cr+jal-wtm", "cr+jal-wtm+sp+ssl/round1/train"):
        data = json.loads((seed / stage / "config.json").read_text())["data"]
        assert {k: data[k] for k in randomised} == randomised, stage
    assert json.loads((seed / "pretrain" / "config.json").read_text())["data"]["rand_conv"] is False
    assert json.loads((seed / "cr+jal-wtm" / "config.json").read_text())["model"]["init"].endswith(
        "seed0/pretrain-cr/checkpoints/last.pth")
    cr = json.loads((seed / "cr+jal-wtm+sp+ssl" / "round1" / "round.json").read_text())
    assert cr["pseudo_from"].endswith("seed0/cr+jal-wtm/checkpoints/last.pth")
    assert "seed 0 cr+jal-wtm+sp+ssl1 target mIoU" in result.stdout
    # +flip: the same adapted model, its own rounds, pseudo labels averaged with the mirror image's
    flipped = json.loads((seed / "cr+jal-wtm+sp+flip+ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())
    unflipped = json.loads((seed / "cr+jal-wtm+sp+ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())
    assert flipped["settings"]["flip"] is True and unflipped["settings"]["flip"] is False
    assert flipped["settings"]["spatial_prior"] is True
    assert flipped["settings"]["checkpoint"] == unflipped["settings"]["checkpoint"]
    assert "seed 0 cr+jal-wtm+sp+flip+ssl1 target mIoU" in result.stdout
    # +all: the same teacher's labels on every pixel (no class threshold), where the median keeps about half
    full = json.loads((seed / "cr+jal-wtm+sp+all+ssl" / "round1" / "pseudo" / "pseudo_labels.json").read_text())
    assert (full["settings"]["percentile"], unflipped["settings"]["percentile"]) == (0.0, 50.0)
    assert full["settings"]["checkpoint"] == unflipped["settings"]["checkpoint"]
    assert full["kept_total"] == 1.0 and unflipped["kept_total"] < 0.9
    assert "seed 0 cr+jal-wtm+sp+all+ssl1 target mIoU" in result.stdout
    # the control without an adversarial stage: the same flipped round straight from `cr`, source-only + pseudo labels
    control = json.loads((seed / "cr+sp+flip+ssl" / "round1" / "round.json").read_text())
    assert control["pseudo_from"].endswith("seed0/cr/checkpoints/last.pth")
    method = json.loads((seed / "cr+sp+flip+ssl" / "round1" / "train" / "config.json").read_text())["method"]
    assert (method["name"], method["self_training"]) == ("source-only", True)
    assert "seed 0 cr+sp+flip+ssl1 target mIoU" in result.stdout
    # a target-only round whose student starts from the colour-randomised route: both teachers label, and its
    # target images are not randomised (the route's randomisation is a source-stream augmentation)
    round1 = seed / "cr+jal-wtm+ens+sp+tgt+ssl" / "round1"
    config = json.loads((round1 / "train" / "config.json").read_text())
    assert config["model"]["init"].endswith("seed0/cr+jal-wtm/checkpoints/last.pth")
    assert config["method"]["target_only"] is True and config["data"]["rand_conv"] is False
    teachers = json.loads((round1 / "pseudo" / "pseudo_labels.json").read_text())["settings"]["teachers"]
    assert [t.endswith("seed0/jal-wtm/checkpoints/last.pth") for t in teachers] == [True]
    # the colour-randomised pretraining is also scored on the held-out source frames, as source-only is
    rows_out = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert 0 <= rows_out["cr@source-val"]["mean"] <= 100 and "\ncr@source-val " in result.stdout
    assert json.loads((seed / "pretrain-cr" / "source_val.json").read_text()) == rows_out["cr@source-val"]["mean"]
    # ... and on the target val by itself (colour randomisation alone: no target image), with its gap closed
    with (seed / "pretrain-cr" / "eval.csv").open() as f:
        pre_evals = [float(r["miou"]) for r in csv.DictReader(f) if r["protocol"] == "19"]
    tail = pre_evals[-2:]  # --quick scores the last 2 evaluations
    assert rows_out["cr@pretraining"]["mean"] == pytest.approx(100 * sum(tail) / len(tail))
    assert rows_out["cr@pretraining"]["gap_closed"] is not None and "\ncr@pretraining " in result.stdout
    # each pretraining with target statistics and no training step (AdaBN as published): a row of its own
    for row, pre in (("adabn@pretraining", "pretrain"), ("cr+adabn@pretraining", "pretrain-cr")):
        cached = json.loads((seed / pre / "target_stats.json").read_text())
        assert cached["frames"] == 200 and rows_out[row]["mean"] == pytest.approx(cached["miou"])
        per_class = cached["per_class"].values()
        assert len(per_class) == 19 and all(math.isnan(v) or 0 <= v <= 100 for v in per_class)
        assert 0 <= cached["miou"] <= 100 and rows_out[row]["gap_closed"] is not None and f"\n{row} " in result.stdout
        assert len(list((seed / pre).glob("checkpoints/iter_*.pth"))) == 1  # scored, not trained further


def test_self_training_rows_name_their_start_rounds_and_pseudo_label_options(bench_module):
    rows = bench_module("ablation_rows")
    ROWS, self_training_stages = rows.ROWS, rows.self_training_stages
    assert self_training_stages("cr+jal-wtm+sp+flip+ssl2") == ("cr+jal-wtm+sp+flip", "cr+jal-wtm", 2, True, True)
    assert self_training_stages("jal-wtm+fda+sp+ssl1") == ("jal-wtm+fda+sp", "jal-wtm+fda", 1, True, False)
    assert self_training_stages("jal-wtm+fda+ssl2") == ("jal-wtm+fda", "jal-wtm+fda", 2, False, False)
    # the rounds train with the method of the row they start from: no adversarial terms after adabn / cr
    assert [rows.row_method(r) for r in ("cr+sp+flip+ssl1", "adabn+sp+ssl1", "cr+jal-wtm+sp+flip+ssl2", "cr")] == [
        "source-only", "source-only", "jal-wtm", "source-only"]
    for row in ROWS:  # every self-training row starts from a row of the table, and so do its extra teachers
        if "+ssl" in row:
            assert self_training_stages(row)[1] in ROWS, row
            assert rows.ensemble_partner(row) in (None, *ROWS), row
    assert self_training_stages("jal-wtm+ens+sp+ssl2") == ("jal-wtm+ens+sp", "jal-wtm", 2, True, False)
    assert rows.ensemble_partner("jal-wtm+ens+sp+ssl1") == "cr+jal-wtm"
    assert rows.ensemble_partner("cr+jal-wtm+ens+sp+ssl1") == "jal-wtm"
    # the colour-randomised student: same two teachers, its own route's pretraining, method and source stream
    assert "cr+jal-wtm+ens+sp+ssl2" in ROWS and rows.colour_randomised("cr+jal-wtm+ens+sp+ssl1")
    assert self_training_stages("cr+jal-wtm+ens+sp+ssl1") == ("cr+jal-wtm+ens+sp", "cr+jal-wtm", 1, True, False)
    assert rows.row_method("cr+jal-wtm+ens+sp+ssl1") == "jal-wtm"
    assert rows.ensemble_partner("jal-wtm+sp+ssl1") is None and rows.row_method("jal-wtm+ens+sp+ssl1") == "jal-wtm"
    # +tgt: the same rounds, pseudo labels and teachers, trained on the target alone; a folder of their own
    assert self_training_stages("jal-wtm+ens+sp+tgt+ssl2") == ("jal-wtm+ens+sp+tgt", "jal-wtm", 2, True, False)
    assert self_training_stages("cr+jal-wtm+sp+tgt+flip+ssl1") == ("cr+jal-wtm+sp+tgt+flip", "cr+jal-wtm", 1, True,
                                                                   True)
    assert rows.ensemble_partner("jal-wtm+ens+sp+tgt+ssl1") == "cr+jal-wtm"
    assert self_training_stages("jal-wtm+ens+sp+tgtcr+ssl1") == ("jal-wtm+ens+sp+tgtcr", "jal-wtm", 1, True, False)
    assert [rows.target_only(r) for r in ("jal-wtm+ens+sp+tgt+ssl1", "cr+jal-wtm+sp+tgt+flip+ssl1",
                                          "jal-wtm+ens+sp+tgtcr+ssl2", "jal-wtm+ens+sp+ssl1", "jal-wtm")] == [
        "+tgt", "+tgt", "+tgtcr", None, None]
    assert {"jal-wtm+ens+sp+tgt+ssl1", "jal-wtm+sp+tgt+ssl1", "jal-wtm+ens+sp+tgtcr+ssl1"} <= set(ROWS)
    # +fresh: every round's student from the adapted model; any order of the round options after the stem
    assert self_training_stages("jal-wtm+ens+sp+tgt+fresh+ssl2") == ("jal-wtm+ens+sp+tgt+fresh", "jal-wtm", 2, True,
                                                                     False)
    assert rows.round_options("jal-wtm+ens+sp+tgt+fresh+ssl2") == ("+tgt", "+fresh")
    assert rows.round_options("cr+jal-wtm+sp+fresh+flip+ssl2") == ("+fresh", "+flip")
    assert rows.target_only("jal-wtm+ens+sp+tgt+fresh+ssl2") == "+tgt" and rows.round_options("jal-wtm") == ()
    # +anchor: later rounds keep round 1's class shares; +fresh and +anchor rows share round 1 with their plain row
    assert rows.round_options("jal-wtm+sp+tgt+anchor+ssl2") == ("+tgt", "+anchor") and "jal-wtm+sp+tgt+ssl2" in ROWS
    assert [rows.first_round_stem(r) for r in ("jal-wtm+sp+tgt+anchor+ssl2", "jal-wtm+ens+sp+tgt+fresh+ssl2",
                                               "cr+jal-wtm+sp+flip+ssl1")] == [
        "jal-wtm+sp+tgt", "jal-wtm+ens+sp+tgt", "cr+jal-wtm+sp+flip"]
    # +all: labels on every pixel change round 1 too
    assert rows.round_options("cr+jal-wtm+sp+all+ssl2") == ("+all",) and "cr+jal-wtm+sp+all+ssl1" in ROWS
    assert rows.first_round_stem("cr+jal-wtm+sp+all+ssl2") == "cr+jal-wtm+sp+all"
    assert self_training_stages("cr+jal-wtm+sp+all+ssl1") == ("cr+jal-wtm+sp+all", "cr+jal-wtm", 1, True, False)
    # +cb: a weighted loss changes round 1 too, so it has rounds of its own
    assert rows.round_options("jal-wtm+sp+tgt+cb+ssl2") == ("+tgt", "+cb") and "jal-wtm+sp+tgt+cb+ssl1" in ROWS
    assert rows.first_round_stem("jal-wtm+sp+tgt+cb+ssl2") == "jal-wtm+sp+tgt+cb"


def test_a_later_round_option_shares_round_one_once_it_is_finished(bench_module, tmp_path):
    share = bench_module("ablation_runs").share_first_round
    plain, anchored = tmp_path / "jal-wtm+sp+tgt+ssl", tmp_path / "jal-wtm+sp+tgt+anchor+ssl"
    (plain / "round1").mkdir(parents=True)
    share(anchored, plain)
    assert not anchored.exists()  # round 1 unfinished: the row runs its own
    (plain / "round1" / "round.json").write_text("{}")
    share(anchored, plain)
    assert (anchored / "round1").resolve() == (plain / "round1").resolve()
    assert (anchored / "round1" / "round.json").is_file()
    share(plain, plain)  # a row is its own first-round row: nothing to link
    assert not (plain / "round1").is_symlink()


def test_coarse_to_fine_pretraining_trains_at_half_size_then_full_size_and_scores_each_run(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench/coarse_to_fine.py"), "--out", str(tmp_path), "--quick", "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    config = {name: json.loads((tmp_path / name / "config.json").read_text())
              for name in ("full", "coarse", "coarse+fine")}
    w, h = config["full"]["data"]["source_size"]
    assert config["coarse"]["data"]["source_size"] == config["coarse"]["data"]["target_size"] == [w // 2, h // 2]
    assert config["coarse+fine"]["data"]["source_size"] == [w, h]
    assert config["coarse+fine"]["model"]["init"] == str(tmp_path / "coarse" / "checkpoints" / "last.pth")
    assert all(c["data"]["rand_conv"] and c["method"]["name"] == "source-only" for c in config.values())
    assert [config[n]["optim"]["iters"] for n in config] == [4, 4, 2]
    minutes = {}
    for name in config:
        scores = json.loads((tmp_path / name / "scores.json").read_text())
        assert all(0 <= scores[k] <= 100 for k in ("source_val", "dev_own_stats", "dev_target_stats"))
        assert len(scores["per_class"]) == 19
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"| {name} |"))
        minutes[name] = float(row.split("|")[4])
    assert "| prior (blind layout" in result.stdout
    seconds = {name: json.loads((tmp_path / name / "result.json").read_text())["seconds"] for name in config}
    assert minutes["coarse"] == pytest.approx(seconds["coarse"] / 60, abs=0.006)
    assert minutes["coarse+fine"] == pytest.approx((seconds["coarse"] + seconds["coarse+fine"]) / 60, abs=0.006)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)  # all finished: no training
    assert again.returncode == 0 and "iter " in result.stdout and "iter " not in again.stdout
    assert again.stdout.split("Colour-randomised")[1] == result.stdout.split("Colour-randomised")[1]
