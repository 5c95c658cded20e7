"""`jal-train`: thin Click shell over the training package."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from jal_deploy.atomic import write_text
from jal_deploy.cli.options import size as size_option
from jal_deploy.datasets import DatasetError
from training.checkpoints import FORMATS, CheckpointError, load_weights
from training.config import METHODS, ConfigError, apply_overrides, from_dict, parse_set, preset_names, resolve
from training.models import ARCHS, build_model

EXAMPLES = """\b
Examples:
  jal-train --preset synthetic-tiny --out runs/tiny            # the embedded benchmark, CPU minutes
  jal-train --preset gta5-cityscapes-r101 --out runs/r101 \\
      --set model.init=DeepLab_resnet_pretrained_init-f81d91e8.pth \\
      --set data.source_root=/data/GTA5 --set data.target_root=/data/cityscapes
  jal-train --out runs/r101 --resume                           # continue after Ctrl-C or a crash
  jal-train --out runs/r101 --resume --stop-at 200000          # go further than the first --stop-at
  jal-train --out runs/r101 --resume-from checkpoints/iter_0100000.pth   # if last.pth is damaged
  torchrun --nproc_per_node 4 -m training.cli --preset ... --out ...   # multi-GPU (DDP)
  jal-train pseudo-label runs/r101/checkpoints/last.pth --target /data/cityscapes --out pl/r101
  jal-train self-train runs/r101/checkpoints/last.pth --preset gta5-cityscapes-r101-ssl --rounds 2 --out runs/ssl
  jal-train select runs/r101 --by d-prob                      # pick a snapshot without target labels
  jal-train pipeline --preset synthetic-route --out runs/route  # a whole recipe: stages, pick, export
"""


@click.group(invoke_without_command=True, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--preset", help=f"Preset name ({', '.join(preset_names())}) or a YAML file.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (config, logs, checkpoints).")
@click.option("--method", type=click.Choice(METHODS), help="A row of the paper's Table 4 (default: the preset's).")
@click.option("--iters", type=click.IntRange(1), help="Schedule length: the poly learning rate runs to it.")
@click.option("--stop-at", type=click.IntRange(0), help="Early stop (the paper: 250k schedule, stop at 150k).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pth.")
@click.option("--resume-from", type=click.Path(dir_okay=False), metavar="CHECKPOINT",
              help="Continue the run in --out from this snapshot instead (e.g. checkpoints/iter_0000600.pth).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. optim.lr=1e-3.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to train.csv).")
@click.version_option(package_name="jal-deploy")
@click.pass_context
def main(ctx, preset, out, method, iters, stop_at, resume, resume_from, sets, no_progress) -> None:
    """Train DeepLab-v2 with JAL + WTM (AAAI 2020) for GTA5/SYNTHIA -> Cityscapes adaptation.

    Runs one row of the paper's Table 4 (--method) with a preset's architecture and hyper-parameters.
    Also: `jal-train archs` lists the networks, `jal-train inspect-weights` checks a checkpoint loads,
    `pseudo-label` / `self-train` run self-training, `select` picks a snapshot without target labels.
    """
    if ctx.invoked_subcommand is not None:
        return
    resume = resume or bool(resume_from)
    if not preset and not resume:
        click.echo(ctx.get_help())
        return
    if not out:
        raise click.UsageError("--out DIR is required")
    from training.engine import Trainer, TrainingError  # torch-heavy: only when training
    from training.synthetic import ensure_synthetic

    try:
        overrides = _overrides(sets, method, iters, stop_at)
        if resume:
            cfg = _resumed_config(Path(out), preset, overrides)
        else:
            if (Path(out) / "checkpoints" / "last.pth").exists():
                raise click.ClickException(f"{out} already holds a run; pass --resume to continue it or "
                                           "choose another --out")
            cfg = resolve(preset, overrides)
        ensure_synthetic(cfg, progress=not no_progress)
        summary = Trainer(cfg, out, resume=resume, resume_from=resume_from, progress=not no_progress).run()
    except (ConfigError, TrainingError, DatasetError) as e:
        raise click.ClickException(str(e)) from None
    _report(summary)
    if summary["status"] == "interrupted":
        sys.exit(130)


def _overrides(sets, method, iters, stop_at) -> dict:
    """--set pairs plus the shortcut options (--method, --iters, --stop-at), as one nested override dict."""
    overrides = parse_set(list(sets))
    for key, value in (("method.name", method), ("optim.iters", iters), ("optim.stop_at", stop_at)):
        if value is not None:
            section, name = key.split(".")
            overrides.setdefault(section, {})[name] = value
    return overrides


def _resumed_config(out: Path, preset: str | None, overrides: dict):
    path = out / "config.json"
    if not path.is_file():
        raise click.ClickException(f"--resume: {out} holds no run (no config.json); start without --resume")
    cfg = from_dict(json.loads(path.read_text()))
    # Repeating the command that started the run plus --resume is fine; a different preset/method is not.
    if preset and preset != cfg.preset:
        raise click.UsageError(f"--resume: {out} was started with --preset {cfg.preset or '(none)'}, not {preset}; "
                               f"drop --preset or start a new run in another --out")
    method = overrides.get("method", {}).get("name")
    if method and method != cfg.method.name:
        raise click.UsageError(f"--resume: {out} trains --method {cfg.method.name}, not {method}; "
                               f"drop --method or start a new run in another --out")
    apply_overrides(cfg, overrides)
    return cfg.validate()


def _report(summary: dict) -> None:
    verb = "Interrupted" if summary["status"] == "interrupted" else "Finished"
    click.echo(f"{verb} at iteration {summary['iteration']}; checkpoints in {summary['out']}/checkpoints")
    for proto, res in summary["last_eval"].items():
        click.echo(f"  target val mIoU ({proto} classes): {100 * res['miou']:.2f}")
    if summary["best"]["miou"] >= 0:
        click.echo(f"  best: {100 * summary['best']['miou']:.2f} at iteration {summary['best']['iteration']} "
                   "(selected with target labels: not strictly unsupervised)")
    if summary["status"] == "interrupted":
        click.echo(f"Continue with: jal-train --out {summary['out']} --resume")


@main.command()
@click.option("--classes", default=19, show_default=True, help="Number of classes.")
def archs(classes: int) -> None:
    """List the architectures with their parameter counts (two-level, without WTM)."""
    for arch in ARCHS:
        model = build_model(arch, classes)
        n = sum(p.numel() for p in model.parameters())
        click.echo(f"{arch:18s} {n:>12,d} parameters  Dec1 on {model.encoder.low_channels} ch, "
                   f"Dec2 on {model.encoder.high_channels} ch, output stride 8")


@main.command("inspect-weights")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--arch", type=click.Choice(ARCHS), default="deeplabv2-r101", show_default=True)
@click.option("--classes", default=19, show_default=True)
@click.option("--fmt", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--aspp-branches", type=click.IntRange(1, 4), default=4, show_default=True,
              help="2 for checkpoints trained with AdaptSegNet's two-branch head.")
def inspect_weights(checkpoint: str, arch: str, classes: int, fmt: str, aspp_branches: int) -> None:
    """Load CHECKPOINT into ARCH and report loaded / missing / unexpected / skipped tensors.

    Example: jal-train inspect-weights DeepLab_resnet_pretrained_init-f81d91e8.pth --arch deeplabv2-r101
    """
    model = build_model(arch, classes, aspp_branches=aspp_branches)
    try:
        report = load_weights(model, checkpoint, fmt=fmt)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(report))
    click.echo("backbone: complete" if report.backbone_complete else "backbone: INCOMPLETE (see missing keys)")


_REPEATED = {"set": "set"}  # options given once per value: their key -> flag


def _command(name: str, *args, **options) -> str:
    """The command line that reproduces a run, for the JSON it writes."""
    parts = ["jal-train", name, *map(str, args)]
    for key, value in options.items():
        flag = "--" + _REPEATED.get(key, key).replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value not in (None, False, "", ()):
            values = value if isinstance(value, (list, tuple)) and key in _REPEATED else [value]
            for v in values:
                parts += [flag, "x".join(map(str, v)) if isinstance(v, tuple) else str(v)]
    return shlex.join(parts)


def _pseudo_options(split: str = "train", list_file: str = "", **pseudo):
    """PseudoLabelOptions from the values of `_PSEUDO_OPTIONS` (click's None for an unset path becomes "")."""
    from training.pseudo_labels import PseudoLabelOptions

    pseudo["size"] = tuple(pseudo["size"] or ())
    for key in ("prior_root", "prior_format"):
        pseudo[key] = pseudo.get(key) or ""
    return PseudoLabelOptions(split=split, list_file=list_file or "", **pseudo)


_NOT_IN_FILES = ("batch", "device")  # pseudo-label options that do not change the files (left out of `command`)


_PSEUDO_OPTIONS = [
    click.option("--cap", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
                 help="Highest class threshold."),
    click.option("--percentile", type=click.FloatRange(0, 100), default=50.0, show_default=True,
                 help="Class threshold = this percentile of the confidences of the pixels predicted as the class."),
    click.option("--flip", is_flag=True, help="Average the prediction of each image and its mirror image."),
    click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Images per forward pass."),
    click.option("--size", callback=size_option, metavar="WxH",
                 help="Network input size (default: the checkpoint's data.target_size)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--spatial-prior", is_flag=True,
                 help="CBST-SP: weight the probabilities by where each class lies in the source labels."),
    click.option("--prior-root", type=click.Path(file_okay=False, exists=True),
                 help="Labelled tree the spatial prior counts (default: the checkpoint's data.source_root)."),
    click.option("--prior-format", type=click.Choice(["gta5", "synthia", "cityscapes"]),
                 help="Format of --prior-root (default: the checkpoint's data.source)."),
]


def _with(options):
    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@main.command("pseudo-label")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.option("--target", required=True, type=click.Path(file_okay=False, exists=True),
              help="Cityscapes-format target tree.")
@click.option("--split", default="train", show_default=True, help="Split of --target to label.")
@click.option("--list", "list_file", default="", help="List file restricting the images (AdaptSegNet format).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The pseudo-label tree to write.")
@_with(_PSEUDO_OPTIONS)
@click.option("--no-progress", is_flag=True)
def pseudo_label(checkpoint, target, split, list_file, out, no_progress, **pseudo):
    """Write pseudo labels of CHECKPOINT's deployed decoder for the --target images, as a Cityscapes tree.

    Class-balanced thresholds as Bidirectional Learning: per class, the median confidence of the pixels
    predicted as that class, capped at 0.9; pixels below become ignore. With --spatial-prior (CBST-SP) the
    probabilities are first weighted by where each class lies in the source labels. Resumable: run it again.

    \b
    Example:
      jal-train pseudo-label runs/r101/checkpoints/last.pth --target /data/cityscapes --out pl/r101 --flip
    """
    from training.pseudo_labels import PseudoLabelError, make_pseudo_labels

    command = _command("pseudo-label", checkpoint, target=target, split=split, list=list_file, out=out,
                       **{k: v for k, v in pseudo.items() if k not in _NOT_IN_FILES})
    try:
        make_pseudo_labels(checkpoint, target, out, _pseudo_options(split, list_file, **pseudo),
                           progress=not no_progress, command=command, log=click.echo)
    except (PseudoLabelError, DatasetError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:  # each file is written atomically: the ones on disk are whole and are skipped next time
        click.echo(f"interrupted: the pseudo labels written to {out} are kept; run the same command again to resume",
                   err=True)
        sys.exit(130)
    click.echo(f"Wrote {out} (thresholds and statistics in {out}/pseudo_labels.json). Next: train on it with\n"
               f"  jal-train --preset PRESET --out RUN --set method.self_training=true --set data.target_labels={out} "
               f"--set model.init={checkpoint}")


@main.command("self-train")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the rounds.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True)
@click.option("--preset", help="Preset of the training runs (default: the checkpoint's own config).")
@click.option("--method", type=click.Choice(METHODS), help="Method trained with the pseudo labels.")
@click.option("--iters", type=click.IntRange(1), help="Schedule length of each round.")
@click.option("--stop-at", type=click.IntRange(0), help="Early stop of each round.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key of every round.")
@_with(_PSEUDO_OPTIONS)
@click.option("--rectify", is_flag=True,
              help="Weight each pixel's pseudo-label loss by its two decoders' agreement, exp(-KL), and add that KL "
                   "(method.pseudo_rectify; Zheng & Yang 2021).")
@click.option("--no-progress", is_flag=True)
def self_train_command(checkpoint, out, rounds, preset, method, iters, stop_at, sets, rectify, no_progress,
                       **pseudo):
    """Self-training rounds from an adapted CHECKPOINT: pseudo labels -> train on them -> repeat.

    Round k is out/round{k}/ (pseudo/ and train/); finished rounds are skipped, so the same command resumes.

    \b
    Example:
      jal-train self-train runs/jal-wtm/checkpoints/last.pth --preset synthetic-bench-ssl \\
          --rounds 2 --out runs/ssl
    """
    from training.engine import TrainingError
    from training.pseudo_labels import PseudoLabelError
    from training.self_training import RoundInterrupted, self_train

    try:
        overrides = _overrides(sets, method, iters, stop_at)
        if rectify:
            overrides.setdefault("method", {})["pseudo_rectify"] = True
        summaries = self_train(checkpoint, out, rounds, preset or "", overrides, _pseudo_options(**pseudo),
                               progress=not no_progress, log=click.echo)
    except RoundInterrupted as e:
        click.echo(str(e))
        sys.exit(130)
    except (ConfigError, TrainingError, PseudoLabelError, DatasetError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    for s in summaries:
        precision = (s["pseudo"].get("precision") or {}).get("overall")
        miou = ", ".join(f"mIoU{p} {100 * r['miou']:.2f}" for p, r in s["eval"].items())
        click.echo(f"round {s['round']}: pseudo labels kept {100 * s['pseudo']['kept_total']:.1f}% of pixels"
                   + (f" (precision {100 * precision:.1f}%)" if precision is not None else "")
                   + (f"; target val {miou}" if miou else "") + f"; model {s['checkpoint']}")
    click.echo(f"Next: jal-export {summaries[-1]['checkpoint']} --out models/ssl")


@main.command("pipeline")
@click.option("--preset", help="A preset with a `pipeline:` recipe (see --list) or a YAML file.")
@click.option("--source", "source_root", type=click.Path(file_okay=False, exists=True),
              help="Labelled source tree (format: the preset's data.source; default: the preset's).")
@click.option("--target", "target_root", type=click.Path(file_okay=False, exists=True),
              help="Cityscapes-format target tree; its train images are used without labels.")
@click.option("--val", "val_root", type=click.Path(file_okay=False, exists=True),
              help="Labelled Cityscapes-format tree that scores each stage's model for the summary (never for a "
                   "choice).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder: one sub-folder per stage.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key of every stage.")
@click.option("--signal-frames", type=click.IntRange(1), default=100, show_default=True,
              help="Target images each stage's label-free signals are computed on.")
@click.option("--list", "list_recipes", is_flag=True, help="List the presets that carry a recipe, and exit.")
@click.option("--no-progress", is_flag=True)
def pipeline_command(preset, source_root, target_root, val_root, out, sets, signal_frames, list_recipes,
                     no_progress):
    """Run a preset's adaptation recipe from a source and a target tree to a selected, exported model.

    Each stage of the preset's `pipeline:` list runs in OUT/NN-name/; the same command resumes (finished
    stages are skipped, an interrupted one continues from its last checkpoint). No stage reads target labels;
    --val only scores the stages for the summary table, which also lands in OUT/pipeline.json.

    \b
    Examples:
      jal-train pipeline --list
      jal-train pipeline --preset synthetic-route --out runs/route        # the embedded benchmark
      jal-train pipeline --preset gta5-cityscapes-r101-pipeline --source /data/GTA5 \\
          --target /data/cityscapes --val /data/cityscapes --out runs/r101-pipeline \\
          --set model.init=DeepLab_resnet_pretrained_init-f81d91e8.pth
    """
    from training.pipeline import (Inputs, PipelineError, PipelineInterrupted, format_summary, run_pipeline,
                                   stages_of)

    if list_recipes:
        from training.config import load_pipeline

        for name in preset_names():
            if load_pipeline(name) is not None:
                click.echo(f"{name:34s} " + " -> ".join(s.name for s in stages_of(name)))
        return
    if not preset or not out:
        raise click.UsageError("--preset and --out are required (or --list)")
    inputs = Inputs(preset=preset, source_root=str(Path(source_root).resolve()) if source_root else "",
                    target_root=str(Path(target_root).resolve()) if target_root else "",
                    val_root=str(Path(val_root).resolve()) if val_root else "", sets=parse_set(list(sets)),
                    signal_frames=signal_frames)
    from export.api import ExportError
    from training.engine import TrainingError
    from training.pseudo_labels import PseudoLabelError

    try:
        summary = run_pipeline(inputs, out, progress=not no_progress, log=click.echo)
    except PipelineInterrupted as e:
        click.echo(f"{e}; run the same command again to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished stages in {out} are kept; run the same command again to resume", err=True)
        sys.exit(130)
    except (PipelineError, ConfigError, TrainingError, PseudoLabelError, DatasetError, CheckpointError, ExportError,
            ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_summary(summary))
    onnx = summary["final"]["onnx"]
    if onnx:
        click.echo(f"Next: jal-segment VIDEO.mp4 -m {Path(out) / onnx[0]}")


@main.command("select")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--by", type=click.Choice(("d-prob", "d-ref", "entropy", "last")), default="d-prob", show_default=True,
              help="d-prob: highest mean D2 source-probability on target maps, each snapshot under its own D2; "
                   "d-ref: the same under one referee, the newest snapshot's D2; entropy: lowest mean prediction "
                   "entropy; last: the newest snapshot.")
@click.option("--val-root", default="", help="Cityscapes-format tree to score on (default: the run's val tree).")
@click.option("--limit", type=click.IntRange(0), default=0, help="Score on the first N val images (0 = the run's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the scores to this file.")
@click.option("--no-progress", is_flag=True)
def select(run, by, val_root, limit, device, json_out, no_progress):
    """Pick a snapshot of RUN without target labels (the paper's Fig. 3 signal, or prediction entropy).

    Scores the snapshots the run kept (iter_*.pth, last.pth): train with a larger run.keep to choose among
    more. When the val images have labels, each snapshot's mIoU is shown beside the pick for comparison.

    \b
    Example:
      jal-train select runs/r101 --by d-prob --json runs/r101/selection.json
    """
    from training.selection import SelectionError, format_selection, select_snapshot

    try:
        result = select_snapshot(run, by, val_root=val_root, limit=limit, device=device, progress=not no_progress)
    except (SelectionError, DatasetError, CheckpointError, ConfigError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_selection(result))
    if json_out:
        write_text(json_out, json.dumps(result, indent=1))
    click.echo(f"Next: jal-export {Path(run) / 'checkpoints' / (result['choice'] + '.pth')} --out models/selected")


if __name__ == "__main__":  # torchrun -m training.cli
    main()
