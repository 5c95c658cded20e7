"""`jal-train`: thin Click shell over the training package."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jal_deploy.atomic import write_text
from jal_deploy.datasets import DatasetError
from training.checkpoints import FORMATS, CheckpointError, load_weights
from training.cli_rounds import pseudo_label, self_train_command
from training.config import (METHODS, ConfigError, apply_overrides, cli_overrides, from_dict, parse_set,
                             preset_names, resolve)
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
        overrides = cli_overrides(sets, method, iters, stop_at)
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


main.add_command(pseudo_label)
main.add_command(self_train_command)

if __name__ == "__main__":  # torchrun -m training.cli
    main()
