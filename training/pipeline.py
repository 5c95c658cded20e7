"""`jal-train pipeline`: a preset's recipe (its `pipeline:` list) from a source and a target tree to a selected,
exported model in one run folder.

Stage k of n lives in `out/NN-name/`: a training run (`train`), a pseudo-label tree plus a round trained on it
(`self-train`, through `self_training.self_train`), the label-free choice of the final model (`pick`) or its ONNX
export (`export`). A finished stage leaves `stage.json` and is skipped when the command runs again; an interrupted
one resumes from its last checkpoint (training saves every `run.save_every` iterations, pseudo labels file by
file), so a kill loses at most one save interval. No stage reads a target label: training runs without
evaluation (`run.eval_every=0`), and a labelled `val_root`, when given, only scores each finished model for the
summary. `pipeline.json` holds the inputs, every stage's record and the pick.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from jal_deploy.atomic import write_text

from .checkpoints import read_checkpoint
from .config import ConfigError, TrainConfig, apply_overrides, load_pipeline, load_preset, merge_overrides
from .pipeline_spec import Stage, parse_pipeline
from .pseudo_labels import PseudoLabelOptions
from .synthetic import ensure_synthetic

SUMMARY = "pipeline.json"
STAGE_JSON = "stage.json"


class PipelineError(RuntimeError):
    """A pipeline that cannot start or go on, with a message a user can act on."""


class PipelineInterrupted(RuntimeError):
    """Ctrl-C inside a stage: what it saved is kept; the same command resumes."""


@dataclasses.dataclass
class Inputs:
    """What a run folder was started with: a rerun must name the same (or nothing, to resume as it was)."""

    preset: str
    source_root: str = ""
    target_root: str = ""
    val_root: str = ""
    sets: dict = dataclasses.field(default_factory=dict)
    signal_frames: int = 100


def stages_of(preset: str) -> list[Stage]:
    raw = load_pipeline(preset)
    if raw is None:
        raise PipelineError(f"preset {preset!r} has no `pipeline:` list; run it with `jal-train --preset {preset}` "
                            "or pick a preset with a recipe (jal-train pipeline --list)")
    return parse_pipeline(raw, f"preset {preset}: pipeline")


def stage_config(inputs: Inputs, stage: Stage, init: str, pseudo_dir: str = "") -> TrainConfig:
    """A model stage's configuration: the preset's sections, the stage's, the command line's; then the data
    roots, no evaluation during training, the start checkpoint and the stage's size scale."""
    sections = merge_overrides(merge_overrides(load_preset(inputs.preset), stage.sections), inputs.sets)
    cfg = TrainConfig(preset=inputs.preset)
    apply_overrides(cfg, {k: v for k, v in sections.items() if k != "preset"})
    d = cfg.data
    d.source_root = inputs.source_root or d.source_root
    d.target_root = inputs.target_root or d.target_root
    cfg.run.eval_every = 0
    if init:
        cfg.model.init, cfg.model.init_fmt = init, "auto"
    if stage.kind == "self-train":  # trained on the pseudo labels its stage writes first
        cfg.method.self_training, d.target_labels = True, pseudo_dir
    if stage.size_scale != 1.0:
        scale = lambda s: tuple(max(1, round(v * stage.size_scale)) for v in s)  # noqa: E731
        d.source_size, d.target_size, d.crop = scale(d.source_size), scale(d.target_size), scale(d.crop)
    if cfg.flags.labels == "target":
        raise ConfigError(f"stage {stage.name}: method {cfg.method.name} trains on target labels; a pipeline "
                          "adapts without them")
    ensure_synthetic(cfg, progress=False)
    return cfg.validate()


def run_pipeline(inputs: Inputs, out: str | Path, progress: bool = True, log=print) -> dict:
    """Run (or resume) the preset's stages into `out`; returns the summary also written to `out/pipeline.json`."""
    out = Path(out)
    stages = stages_of(inputs.preset)
    summary = open_run(out, inputs, stages)
    records: dict[str, dict] = {}
    previous = ""  # checkpoint of the latest model stage
    started = time.perf_counter()
    for k, stage in enumerate(stages, 1):
        folder = out / f"{k:02d}-{stage.name}"
        done = folder / STAGE_JSON
        head = f"[stage {k}/{len(stages)}] {stage.name} ({stage.kind})"
        if done.is_file():
            record = json.loads(done.read_text())
            log(f"{head}: finished earlier")
        else:
            log(f"{head} in {folder}")
            t0 = time.perf_counter()
            record = _run_stage(stage, folder, inputs, records, previous, progress, log)
            record.update(name=stage.name, kind=stage.kind, folder=folder.name,
                          seconds=record.get("seconds", time.perf_counter() - t0))
            write_text(done, json.dumps(record, indent=1))
        records[stage.name] = record
        if stage.makes_model or stage.kind == "pick":  # the stage after a pick starts from its choice
            previous = str(out / record["checkpoint"])
        summary["stages"] = list(records.values())
        write_text(out / SUMMARY, json.dumps(summary, indent=1))
    summary["final"] = _final(records, stages)
    summary["seconds_this_call"] = time.perf_counter() - started
    write_text(out / SUMMARY, json.dumps(summary, indent=1))
    return summary


# `--set` keys a rerun may change: how fast and how verbosely the stages run, not what they train (a long run
# resumed on a bigger machine takes more threads)
MACHINE_SETTINGS = {"run": ("threads", "tensorboard", "log_every")}


def _machine_keys() -> str:
    return ", ".join(f"{section}.{key}" for section, keys in MACHINE_SETTINGS.items() for key in keys)


def _what_is_trained(inputs: dict) -> dict:
    sets = {section: {k: v for k, v in values.items() if k not in MACHINE_SETTINGS.get(section, ())}
            for section, values in inputs.get("sets", {}).items()}
    return {**inputs, "sets": {section: values for section, values in sets.items() if values}}


def open_run(out: Path, inputs: Inputs, stages: list[Stage]) -> dict:
    """The run folder's summary: new, or the existing one when the inputs and recipe are those it started with
    (machine settings aside: `MACHINE_SETTINGS`)."""
    path = out / SUMMARY
    recipe = [dataclasses.asdict(s) for s in stages]
    if path.is_file():
        saved = json.loads(path.read_text())
        if _what_is_trained(saved["inputs"]) != _what_is_trained(json.loads(json.dumps(dataclasses.asdict(inputs)))):
            raise PipelineError(f"{out} holds a pipeline started with other inputs ({saved['inputs']}); run the same "
                                f"command to resume it (only {_machine_keys()} may change), or choose another --out")
        _redo_changed_tail(out, saved["recipe"], json.loads(json.dumps(recipe)), stages)
        saved["inputs"], saved["recipe"] = dataclasses.asdict(inputs), recipe
        write_text(path, json.dumps(saved, indent=1))
        return saved
    if out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out} is not empty and holds no {SUMMARY}: choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"inputs": dataclasses.asdict(inputs), "recipe": recipe, "stages": []}
    write_text(path, json.dumps(summary, indent=1))
    return summary


def _redo_changed_tail(out: Path, saved: list[dict], recipe: list[dict], stages: list[Stage]) -> None:
    """A changed `pick` or `export` after the last model stage is run again (it reads only recorded signals and
    checkpoints); any other change of the recipe would leave trained stages that no longer match it: refused."""
    last_model = max(i for i, s in enumerate(stages) if s.makes_model)
    same_frame = [(r["name"], r["kind"]) for r in saved] == [(r["name"], r["kind"]) for r in recipe]
    changed = [i for i, (a, b) in enumerate(zip(saved, recipe)) if a != b] if same_frame else [0]
    if any(i <= last_model for i in changed):
        raise PipelineError(f"{out} holds a pipeline of another recipe (the preset's `pipeline:` changed since it "
                            "started); choose another --out")
    for i in range(min(changed, default=len(stages)), len(stages)):
        (out / f"{i + 1:02d}-{stages[i].name}" / STAGE_JSON).unlink(missing_ok=True)


def _run_stage(stage: Stage, folder: Path, inputs: Inputs, records: dict, previous: str, progress: bool,
               log) -> dict:
    if stage.kind == "train":
        return _model_record(*_train(stage, folder, inputs, records, previous, progress), inputs, folder)
    if stage.kind == "self-train":
        return _model_record(*_self_train(stage, folder, inputs, records, previous, progress, log), inputs, folder)
    if stage.kind == "pick":
        return _pick(stage, records)
    return _export(stage, folder, inputs, records, log)


def _start(stage: Stage, records: dict, previous: str, out: Path) -> str:
    return str(out / records[stage.init]["checkpoint"]) if stage.init else previous


def _train(stage: Stage, folder: Path, inputs: Inputs, records: dict, previous: str,
           progress: bool) -> tuple[TrainConfig, Path, float, dict]:
    from .engine import Trainer, TrainingError

    cfg = stage_config(inputs, stage, _start(stage, records, previous, folder.parent))
    last = folder / "checkpoints" / "last.pth"
    trainer = Trainer(cfg, folder, resume=last.is_file(), progress=progress)
    if trainer.iteration < cfg.last_iteration:  # else: killed after its last save, before stage.json
        try:
            result = trainer.run()
        except TrainingError as e:
            raise PipelineError(f"stage {stage.name}: {e}") from None
        if result["status"] != "finished":
            raise PipelineInterrupted(f"stage {stage.name} interrupted in {folder}")
    return cfg, last, read_checkpoint(last).get("seconds", 0.0), {}


def _self_train(stage: Stage, folder: Path, inputs: Inputs, records: dict, previous: str, progress: bool,
                log) -> tuple[TrainConfig, Path, float, dict]:
    from .self_training import RoundInterrupted, self_train

    start = _start(stage, records, previous, folder.parent)
    cfg = stage_config(inputs, stage, start, str(folder / "round1" / "pseudo"))
    overrides = {k: v for k, v in cfg.to_dict().items() if k != "preset"}
    options = PseudoLabelOptions(**stage.pseudo)
    t0 = time.perf_counter()
    try:
        rounds = self_train(start, folder, 1, inputs.preset, overrides, options, progress=progress, log=log)
    except RoundInterrupted as e:
        raise PipelineInterrupted(str(e)) from None
    pseudo = rounds[0]["pseudo"]
    return cfg, Path(rounds[0]["checkpoint"]), time.perf_counter() - t0, {"pseudo_kept": pseudo["kept_total"]}


def _model_record(cfg: TrainConfig, checkpoint: Path, seconds: float, extra: dict, inputs: Inputs,
                  folder: Path) -> dict:
    """A model stage's record: its checkpoint, cost, label-free signals and (with a labelled val) its mIoU."""
    from .signals import label_free_signals, source_shares

    d = cfg.data
    shares = source_shares(d.source_root, d.source, d.protocol)
    signals = label_free_signals(checkpoint, d.target_root, tuple(d.target_size), shares, inputs.signal_frames,
                                 device=_device(cfg))
    record = {"checkpoint": str(checkpoint.relative_to(folder.parent)), "seconds": seconds,
              "iterations": cfg.last_iteration, "method": cfg.method.name, "signals": signals,
              **extra}
    if inputs.val_root:
        record["val"] = val_miou(checkpoint, inputs.val_root, cfg)
    return record


def _device(cfg: TrainConfig) -> str:
    import torch

    return "cuda" if cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available()) else "cpu"


def val_miou(checkpoint: Path, val_root: str, cfg: TrainConfig) -> dict:
    """mIoU % and per-class IoU % of a stage's model on the labelled val (reported only, never chosen by)."""
    import torch
    from torch.utils.data import DataLoader

    from .checkpoints import load_trained
    from .data import Augment, SegmentationDataset
    from .evaluate import evaluate

    model, _ = load_trained(checkpoint)
    d = cfg.data
    val = SegmentationDataset(val_root, "cityscapes", split=d.val_split, augment=Augment(size=tuple(d.target_size)),
                              protocol=d.protocol, resize_label=False)
    result = evaluate(model, DataLoader(val, batch_size=1), d.protocol, [d.protocol], torch.device(_device(cfg)))
    res = result[d.protocol]
    return {"miou": 100 * res["miou"], "per_class": {k: 100 * v for k, v in res["per_class"].items()},
            "frames": len(val)}


def _pick(stage: Stage, records: dict) -> dict:
    from .signals import pick

    candidates = [records[n] for n in (stage.among or [n for n, r in records.items() if "checkpoint" in r])]
    chosen = pick(candidates, stage.by)
    return {"by": stage.by, "among": [c["name"] for c in candidates], "choice": chosen["name"],
            "checkpoint": chosen["checkpoint"]}


def _export(stage: Stage, folder: Path, inputs: Inputs, records: dict, log) -> dict:
    from export.api import ExportError, export_checkpoint

    source = next((r for r in reversed(records.values()) if r["kind"] == "pick"), None)
    source = source or next(r for r in reversed(records.values()) if "checkpoint" in r)
    checkpoint = folder.parent / source["checkpoint"]
    target = inputs.target_root or read_checkpoint(checkpoint)["config"]["data"]["target_root"]
    try:
        export_checkpoint(checkpoint, folder, fp16=bool(stage.export.get("fp16")),
                          int8_calibration=target if stage.export.get("int8") else None,
                          output=stage.export.get("output", "labels"), val_root=inputs.val_root or None, log=log)
    except ExportError as e:  # a failed int8 or fp16 file is removed; the fp32 ONNX is what the recipe needs
        if not (folder / f"{checkpoint.stem}.onnx").is_file():
            raise PipelineError(f"stage {stage.name}: {e}") from None
        log(f"stage {stage.name}: {e}")
    report = json.loads((folder / "parity.json").read_text())
    files = sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx")
    return {"from": source["name"], "checkpoint": source["checkpoint"], "files": files, "status": report["status"],
            "parity": report["parity"]}


def _final(records: dict, stages: list[Stage]) -> dict:
    """The model the pipeline delivers: the pick's choice (without a pick stage, the last model stage) and its
    exported files."""
    pick = next((records[s.name] for s in reversed(stages) if s.kind == "pick"), None)
    export = next((records[s.name] for s in stages if s.kind == "export"), None)
    model = pick["choice"] if pick else [s.name for s in stages if s.makes_model][-1]
    onnx = [f"{export['folder']}/{f}" for f in export["files"]] if export else []
    return {"stage": model, "checkpoint": records[model]["checkpoint"], "onnx": onnx}


def format_summary(summary: dict) -> str:
    """The table printed at the end: per stage its cost, label-free signals and (with a val) mIoU."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = ["| stage | kind | minutes | entropy | flip agreement | decoder KL | share drift | D2 p(source) | val mIoU |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["stages"]:
        s = r.get("signals") or {}
        val = (r.get("val") or {}).get("miou")
        rows.append(f"| {r['name']} | {r['kind']} | {r['seconds'] / 60:.1f} | {num(s.get('entropy'), '.4f')} "
                    f"| {num(s.get('flip_agreement'), '.4f')} | {num(s.get('decoder_kl'), '.4f')} "
                    f"| {num(s.get('share_drift'), '.4f')} | {num(s.get('d_prob'), '.3f')} | {num(val, '.2f')} |")
    final = summary.get("final") or {}
    lines = ["\n".join(rows)]
    for pick in (r for r in summary["stages"] if r["kind"] == "pick"):
        lines.append(f"{pick['name']} (by {pick['by']}, no target labels): {pick['choice']}")
    if final:
        lines.append(f"final model: {final['checkpoint']}" + (f"; ONNX: {', '.join(final['onnx'])}"
                                                               if final["onnx"] else ""))
    return "\n".join(lines)
