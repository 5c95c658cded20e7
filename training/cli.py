"""`jal-train`: thin Click shell over the training package."""
from __future__ import annotations

import click

from training.checkpoints import FORMATS, CheckpointError, load_weights
from training.models import ARCHS, build_model


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jal-deploy")
def main() -> None:
    """Train DeepLab-v2 with JAL + WTM (AAAI 2020) for GTA5/SYNTHIA -> Cityscapes adaptation.

    The adaptation loop and its presets land with the training issue. Available now: the paper's networks
    (`jal-train archs`) and a check that a checkpoint you already have loads (`jal-train inspect-weights`).
    """


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
