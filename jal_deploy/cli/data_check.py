"""`jal-data check`: scan a GTA5 / SYNTHIA / Cityscapes tree before a long run reads it."""
from __future__ import annotations

import os
from pathlib import Path

import click

from jal_deploy.datasets import FORMATS, DatasetError, check_tree, format_report


@click.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Layout of the tree.")
@click.option("--split", default=None, help="Cityscapes split folder (default: val). Not used by GTA5/SYNTHIA.")
@click.option("--list", "list_file", type=click.Path(path_type=Path), default=None,
              help="AdaptSegNet/ADVENT list file (one image per line) that restricts and orders the samples.")
@click.option("--no-labels", is_flag=True, help="Check images only (e.g. the unlabelled Cityscapes train split).")
@click.option("--show", default=10, show_default=True, help="How many missing or bad files to name.")
@click.option("--jobs", "-j", default=min(4, os.cpu_count() or 1), show_default=True, help="Decoding threads.")
def check(path: Path, fmt: str, split: str | None, list_file: Path | None, no_labels: bool, show: int,
          jobs: int) -> None:
    """Count samples, image sizes, missing pairs and the label-id histogram of a dataset tree.

    Exits non-zero when the tree is unusable (missing root, no samples, missing labels, unreadable or
    wrongly encoded labels). Unknown label ids and size mismatches are reported as warnings.

    \b
    Example:
      jal-data check data/cityscapes --format cityscapes --split val
      jal-data check data/GTA5 --format gta5 --list gta5_list/train.txt
      jal-data check data/cityscapes --format cityscapes --split train --no-labels
    """
    try:
        report = check_tree(path, fmt, split=split, list_file=list_file, labels=not no_labels, jobs=jobs)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_report(report, show=show))
    if report.problems:
        raise click.ClickException(f"{path} is not usable as a {fmt} tree: " + "; ".join(report.problems))
    click.echo(f"OK: {report.num_images} images" + ("" if no_labels else f", {report.num_labels} labels")
               + f" usable as {fmt}.")
