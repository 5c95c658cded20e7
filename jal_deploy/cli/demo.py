"""`jal-demo`: the README's main job in one command (thin shell over `jal_deploy.demo.run_demo`)."""
from __future__ import annotations

import click

from jal_deploy.cli import options
from jal_deploy.backends import DEVICES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--out", default="runs/demo-segment", show_default=True, type=click.Path(file_okay=False))
@click.option("-m", "--model", type=click.Path(dir_okay=False), help="[default: models/jal-wtm-ssl-synthetic-r18.onnx]")
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="Model to compare with [default: models/source-only-synthetic-r18.onnx, the same network not adapted].")
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="Run the baseline side by side (tables with the delta, comparison images and video).")
@click.option("--val-frames", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--video-frames", default=75, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default="512x256", show_default=True, callback=options.size, help="Frame size WIDTHxHEIGHT.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(out, model, baseline, compare, val_frames, video_frames, size, device, progress) -> None:
    """Generate the synthetic target val and a street video, segment both with the shipped adapted model and its
    source-only counterpart, and print both mIoU tables with the per-class delta and FPS; writes side-by-side
    images, the annotated video and a side-by-side video under --out.

    \b
    Then try your own data:
      jal-segment my_video.mp4 -m models/jal-wtm-ssl-synthetic-r18.onnx
      jal-segment cityscapes:/data/cityscapes -m my_model.onnx --save labelid
    """
    from jal_deploy.backends import BackendError
    from jal_deploy.outputs import OutputError

    try:
        from jal_deploy.demo import run_demo
        run_demo(out, model, val_frames, video_frames, size, device=device, progress=progress,
                 log=lambda m: click.echo(m), baseline=baseline, compare=compare)
    except (FileNotFoundError, BackendError, OutputError) as e:
        raise click.ClickException(str(e)) from None
