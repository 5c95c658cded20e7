"""The synthetic benchmark's baselines and its ablation script (the real table is a benchmark, not a test)."""
import json
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
