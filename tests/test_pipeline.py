"""`jal-train pipeline`: a recipe from two trees to a picked, exported model; resumes after kill -9 between and
inside stages; never reads a target label."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jal_deploy.synth import generate
from training.cli import main
from training.config import ConfigError, load_pipeline, preset_names
from training.pipeline import Inputs, stage_config, stages_of
from training.pipeline_spec import parse_pipeline

TINY = ["--set", "model.width=0.125", "--set", "data.source_size=96x48", "--set", "data.target_size=96x48",
        "--set", "model.target_bn_frames=4", "--set", "run.save_every=5", "--set", "run.keep=100",
        "--set", "run.threads=1", "--signal-frames", "4", "--no-progress"]
RECIPE = """
base: synthetic-tiny
pipeline:
  - name: source
    method: {name: source-only}
    optim: {iters: 12}
  - name: jal-wtm
    method: {name: jal-wtm}
    model: {target_bn_frames: 4}
    optim: {iters: 40, lr: 0.001, lr_wtm: 0.0004}
  - name: round1
    kind: self-train
    pseudo: {spatial_prior: true}
    method: {name: jal-wtm, pseudo_rectify: true}
    optim: {iters: 4}
  - {name: pick, kind: pick, by: entropy}
  - {name: export, kind: export}
"""


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """A tiny source/target pair whose target train split has no label file at all, and a labelled val."""
    root = tmp_path_factory.mktemp("pipeline-data")
    generate(root / "synth", seed=3, counts={"gta5": 6, "synthia": 0, "cs_train": 6, "cs_val": 3}, size=(128, 64),
             progress=False, workers=1)
    val = root / "val"
    shutil.copytree(root / "synth" / "cityscapes", val)
    shutil.rmtree(root / "synth" / "cityscapes" / "gtFine" / "train")  # no target train label exists
    shutil.rmtree(root / "synth" / "cityscapes" / "gtFine" / "val")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    return {"source": root / "synth" / "gta5", "target": root / "synth" / "cityscapes", "val": val,
            "recipe": recipe}


def command(trees, out: Path) -> list[str]:
    return [sys.executable, "-m", "training.cli", "pipeline", "--preset", str(trees["recipe"]),
            "--source", str(trees["source"]), "--target", str(trees["target"]), "--val", str(trees["val"]),
            "--out", str(out), *TINY]


def run_until(cmd: list[str], path: Path, timeout: float = 240) -> None:
    """Start the pipeline and kill -9 it as soon as `path` exists."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the pipeline ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_pipeline_resumes_after_kill_9_between_and_inside_stages_without_target_labels(trees, tmp_path):
    out = tmp_path / "run"
    cmd = command(trees, out)
    run_until(cmd, out / "01-source" / "stage.json")  # killed between stages
    first = (out / "01-source" / "stage.json").read_text()
    saved = out / "02-jal-wtm" / "checkpoints" / "iter_0000010.pth"
    # killed inside a stage once its snapshot at iteration 15 exists: last.pth then holds iteration 10 or later
    run_until(cmd, out / "02-jal-wtm" / "checkpoints" / "iter_0000015.pth")
    saved_at = saved.stat().st_mtime_ns
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[stage 1/5] source (train): finished earlier" in done.stdout
    assert (out / "01-source" / "stage.json").read_text() == first  # the finished stage was not run again
    assert saved.stat().st_mtime_ns == saved_at  # stage 2 continued from iteration 10, not from 0
    summary = json.loads((out / "pipeline.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["source", "jal-wtm", "round1", "pick", "export"]
    models = [s for s in summary["stages"] if "signals" in s]
    for s in models:
        assert 0.0 <= s["signals"]["entropy"] <= 1.0 and 0.0 <= s["signals"]["flip_agreement"] <= 1.0
        assert 0.0 <= s["signals"]["share_drift"] <= 1.0 and s["signals"]["frames"] == 4
        assert 0.0 <= s["val"]["miou"] <= 100.0 and s["val"]["frames"] == 3
    assert models[0]["signals"]["d_prob"] is None and models[1]["signals"]["d_prob"] is not None
    pick = summary["stages"][3]
    assert pick["choice"] == min(models, key=lambda s: s["signals"]["entropy"])["name"]
    assert summary["final"]["stage"] == pick["choice"]
    onnx = out / summary["final"]["onnx"][0]
    assert onnx.is_file() and summary["stages"][4]["status"]
    # the pseudo labels were made without target labels: their precision could not be measured
    pseudo = json.loads(next((out / "03-round1").rglob("pseudo_labels.json")).read_text())
    assert pseudo.get("precision") is None
    assert "| jal-wtm | train |" in done.stdout and f"pick (by entropy, no target labels): {pick['choice']}" \
        in done.stdout


def test_a_rerun_with_other_inputs_is_refused(trees, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.json").write_text(json.dumps({"inputs": {"preset": "other"}, "recipe": [], "stages": []}))
    result = CliRunner().invoke(main, ["pipeline", "--preset", str(trees["recipe"]), "--target",
                                       str(trees["target"]), "--out", str(out)])
    assert result.exit_code == 1 and "other inputs" in result.output


def test_a_rerun_may_change_the_threads_but_not_what_is_trained(tmp_path):
    from training.pipeline import PipelineError, open_run

    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out, stages = tmp_path / "run", stages_of(str(recipe))
    open_run(out, Inputs(preset=str(recipe), sets={"run": {"seed": "0", "threads": "1"}}), stages)
    resumed = open_run(out, Inputs(preset=str(recipe), sets={"run": {"seed": "0", "threads": "2"}}), stages)
    assert resumed["inputs"]["sets"] == {"run": {"seed": "0", "threads": "2"}}  # the last call's, kept
    open_run(out, Inputs(preset=str(recipe), sets={"run": {"seed": "0"}}), stages)
    with pytest.raises(PipelineError, match="other inputs"):
        open_run(out, Inputs(preset=str(recipe), sets={"run": {"seed": "1"}}), stages)
    with pytest.raises(PipelineError, match="other inputs"):
        open_run(out, Inputs(preset=str(recipe), sets={"run": {"seed": "0"}, "optim": {"lr": "0.1"}}), stages)


def test_a_preset_without_a_recipe_says_which_have_one():
    result = CliRunner().invoke(main, ["pipeline", "--preset", "synthetic-tiny", "--out", "/tmp/never-written"])
    assert result.exit_code == 1 and "has no `pipeline:` list" in result.output
    listed = CliRunner().invoke(main, ["pipeline", "--list"])
    assert listed.exit_code == 0 and "synthetic-route" in listed.output and "synthetic-tiny " not in listed.output


@pytest.mark.parametrize("stages,message", [
    ([{"name": "a", "optim": {"iters": 1}, "colour": 1}], "unknown key 'colour'"),
    ([{"name": "a"}, {"name": "a"}], "already named 'a'"),
    ([{"name": "a", "kind": "self-train"}], "no earlier model stage|there is none"),
    ([{"name": "a"}, {"name": "b", "init": "c"}], "init 'c' is not an earlier model stage"),
    ([{"name": "a"}, {"name": "p", "kind": "pick", "by": "labels"}], "by must be one of"),
    ([{"name": "a", "kind": "self-train", "pseudo": {"temperature": 2}}], "there is none|unknown pseudo"),
    ([{"name": "a"}, {"name": "b", "kind": "self-train", "pseudo": {"temperature": 2}}], "unknown pseudo option"),
])
def test_recipe_mistakes_are_named(stages, message):
    with pytest.raises(ConfigError, match=message):
        parse_pipeline(stages)


RECIPES = [name for name in preset_names() if load_pipeline(name) is not None]


@pytest.mark.parametrize("preset", RECIPES)
def test_every_recipe_resolves_and_no_stage_trains_on_target_labels(preset, tmp_path):
    inputs = Inputs(preset=preset, source_root=str(tmp_path / "src"), target_root=str(tmp_path / "tgt"),
                    sets={"data": {"synthetic": False}})
    stages = stages_of(preset)
    assert stages[-2].kind == "pick" and stages[-1].kind == "export"
    for stage in (s for s in stages if s.makes_model):
        cfg = stage_config(inputs, stage, "x.pth" if stage is not stages[0] else "", str(tmp_path / "pseudo"))
        assert cfg.flags.labels == "source" and cfg.run.eval_every == 0
        assert cfg.data.target_labels in ("", str(tmp_path / "pseudo"))
        assert cfg.method.self_training == (stage.kind == "self-train")


def test_the_route_recipe_is_the_benchmarks_route():
    """synthetic-route holds the measured route: coarse-to-fine pretraining, an 8000 + 8000 colour-randomised
    teacher, JAL + WTM from it with target statistics, one rectified round with spatial priors."""
    stages = {s.name: s for s in stages_of("synthetic-route")}
    assert stages["cr-coarse"].size_scale == 0.5 and stages["cr-coarse"].sections["optim"]["iters"] == 8000
    assert stages["cr"].sections["optim"]["iters"] == 8000 and stages["jal-wtm"].init == "cr"
    assert stages["round1"].pseudo == {"spatial_prior": True}
    assert stages["round1"].sections["method"]["pseudo_rectify"] is True


def test_a_changed_pick_after_the_last_model_stage_is_redone_and_a_changed_model_stage_refused(tmp_path):
    from training.pipeline import PipelineError, open_run

    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    inputs = Inputs(preset=str(recipe))
    out = tmp_path / "run"
    open_run(out, inputs, stages_of(str(recipe)))
    for k, name in ((4, "pick"), (5, "export")):
        (out / f"0{k}-{name}").mkdir()
        (out / f"0{k}-{name}" / "stage.json").write_text("{}")
    recipe.write_text(RECIPE.replace("by: entropy", "by: decoder-agreement"))
    open_run(out, inputs, stages_of(str(recipe)))
    assert not (out / "04-pick" / "stage.json").exists() and not (out / "05-export" / "stage.json").exists()
    recipe.write_text(RECIPE.replace("iters: 40", "iters: 41").replace("by: entropy", "by: decoder-agreement"))
    with pytest.raises(PipelineError, match="another recipe"):
        open_run(out, inputs, stages_of(str(recipe)))
