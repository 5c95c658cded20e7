"""`jal-train`: thin Click shell over the training package."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

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
"""


@click.group(invoke_without_command=True, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"]})
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
    Also: `jal-train archs` lists the networks, `jal-train inspect-weights` checks a checkpoint loads.
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
        overrides = parse_set(list(sets))
        for key, value in (("method.name", method), ("optim.iters", iters), ("optim.stop_at", stop_at)):
            if value is not None:
                section, name = key.split(".")
                overrides.setdefault(section, {})[name] = value
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


if __name__ == "__main__":  # torchrun -m training.cli
    main()
