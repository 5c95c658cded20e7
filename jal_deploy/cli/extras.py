"""Console entry points that name the extra to install when a package of it is missing, instead of a traceback.

The runtime installs without torch (`pip install 'jal-deploy[cpu]'`, what `demo.sh` does), so `jal-train` or
`jal-export` may be on the PATH of an environment that cannot run them. Each entry point imports its Click command
only when called and turns a missing optional package into one line naming the extra, with a non-zero exit.
"""
from __future__ import annotations

import importlib
import sys

import click

# the optional packages an entry point may miss (their extras: pyproject.toml)
OPTIONAL = ("torch", "yaml", "tensorboard", "onnx", "onnxscript", "onnxslim", "onnxruntime", "av", "cityscapesscripts")
HELP_FLAGS = ("-h", "--help")


def install_line(command: str, module: str, extras: str) -> str:
    return (f"{command} needs the '{extras}' extra (missing Python module '{module}'): "
            f"pip install 'jal-deploy[{extras}]'  (from a clone: pip install -e '.[{extras}]')")


# command -> (its Click object, the extras it needs, what it does)
COMMANDS = {
    "jal-train": ("training.cli:main", "train", "Adaptation training (JAL + WTM, the paper's Table 4 rows, the "
                                                "adaptation pipeline, self-training, label-free selection)."),
    "jal-export": ("export.cli:main", "train,export",
                   "Fold WTM and write verified ONNX / TensorRT / torch.export artefacts."),
    "jal-segment": ("jal_deploy.cli.segment:main", "cpu",
                    "Segment images, folders, videos, cameras or a Cityscapes val tree with an exported model."),
    "jal-data": ("jal_deploy.cli.data:main", "cpu", "Check dataset trees and generate the synthetic benchmark."),
    "jal-demo": ("jal_deploy.cli.demo:main", "cpu", "The shipped demo: val mIoU and an annotated street video."),
}


def run(command: str) -> None:
    """Import the command's Click object and call it; a missing optional package becomes one line naming the extras
    the command needs (exit 1; `--help` prints what the command does with that line and exits 0)."""
    target, extras, summary = COMMANDS[command]
    module, attr = target.split(":")
    try:
        main = getattr(importlib.import_module(module), attr)
        main(prog_name=command)
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root not in OPTIONAL:
            raise
        line = install_line(command, root, extras)
        if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
            click.echo(f"Usage: {command} [OPTIONS] COMMAND [ARGS]...\n\n  {summary}\n\n  {line}")
            sys.exit(0)
        click.echo(f"Error: {line}", err=True)
        sys.exit(1)


def jal_train() -> None:
    run("jal-train")


def jal_export() -> None:
    run("jal-export")


def jal_segment() -> None:
    run("jal-segment")


def jal_data() -> None:
    run("jal-data")


def jal_demo() -> None:
    run("jal-demo")
