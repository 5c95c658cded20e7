"""`jal-train pseudo-label` and `jal-train self-train`: the Table-5 style rounds after adaptation, as commands
(`training.cli` adds them to `jal-train`)."""
from __future__ import annotations

import shlex
import sys

import click

from jal_deploy.cli.options import size as size_option
from jal_deploy.datasets import DatasetError
from training.checkpoints import CheckpointError
from training.config import METHODS, ConfigError, cli_overrides

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


@click.command("pseudo-label")
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


@click.command("self-train")
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
        overrides = cli_overrides(sets, method, iters, stop_at)
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
