"""The benchmark's pipeline rows: what each row name stacks (FDA, rounds, round options) and the folders its stages
train in."""

import csv
import json
import math

import pytest

from tests.test_benchmark import _bench


def test_quick_pipeline_rows_stack_fda_and_self_training_rounds_on_jal_wtm(tmp_path):
    rows = ["prior", "source-only", "jal-wtm+fda+ssl2", "jal-wtm+fda+sp+ssl1", "jal-wtm+sp+ssl1", "adaptsegnet+onehot",
            "cr", "cr+jal-wtm+sp+ssl1", "cr+jal-wtm+sp+flip+ssl1", "cr+jal-wtm+sp+all+ssl1", "cr+sp+flip+ssl1",
            "cr+jal-wtm+sp+all+rect+ssl1", "oracle"]
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
    # +rect: the same teacher's labels (here on every pixel), the round's loss rectified by its two decoders
    rect = seed / "cr+jal-wtm+sp+all+rect+ssl" / "round1"
    assert json.loads((rect / "train" / "config.json").read_text())["method"]["pseudo_rectify"] is True
    assert json.loads((rect / "pseudo" / "pseudo_labels.json").read_text())["settings"] == full["settings"]
    with (rect / "train" / "train.csv").open() as f:
        assert all(float(r["kl_tgt"]) > 0 for r in csv.DictReader(f))
    assert json.loads((seed / "cr+jal-wtm+sp+all+ssl" / "round1" / "train" / "config.json").read_text())[
        "method"]["pseudo_rectify"] is False
    # the control without an adversarial stage: the same flipped round straight from `cr`, source-only + pseudo labels
    control = json.loads((seed / "cr+sp+flip+ssl" / "round1" / "round.json").read_text())
    assert control["pseudo_from"].endswith("seed0/cr/checkpoints/last.pth")
    method = json.loads((seed / "cr+sp+flip+ssl" / "round1" / "train" / "config.json").read_text())["method"]
    assert (method["name"], method["self_training"]) == ("source-only", True)
    assert "seed 0 cr+sp+flip+ssl1 target mIoU" in result.stdout
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
    for row in ROWS:  # every self-training row starts from a row of the table
        if "+ssl" in row:
            assert self_training_stages(row)[1] in ROWS, row
    # +flip, +all, +rect: how the rounds label and train, in any order after the stem's `+sp`
    assert rows.round_options("cr+jal-wtm+sp+all+ssl2") == ("+all",) and "cr+jal-wtm+sp+all+ssl1" in ROWS
    assert self_training_stages("cr+jal-wtm+sp+all+ssl1") == ("cr+jal-wtm+sp+all", "cr+jal-wtm", 1, True, False)
    assert rows.round_options("cr+jal-wtm+sp+all+rect+ssl1") == ("+all", "+rect")
    assert rows.round_options("cr+jal-wtm+sp+rect+flip+ssl1") == ("+rect", "+flip") and rows.round_options("cr") == ()
    assert "cr+jal-wtm+sp+rect+ssl1" in ROWS


def test_help_names_every_row_once(bench_module, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        bench_module("synthetic_ablation").main(["--help"])
    out = capsys.readouterr().out
    assert "[--rows ROW [ROW ...]]" in out  # the usage line names no row, the list below each one once
    assert all(out.count(row) == 1 for row in ("cr+jal-wtm+sp+all+rect+ssl1", "adaptsegnet+onehot", "adabn+sp+ssl1"))
