"""`jal-data synth-video`: a short drive through one procedural street, as a labelled video for `jal-segment`."""
from __future__ import annotations

import click

from jal_deploy.cli import options
from jal_deploy.synth import DOMAINS, SynthError, generate_video


@click.command("synth-video", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--frames", default=75, show_default=True, type=click.IntRange(min=1), help="Number of frames.")
@click.option("--fps", default=15.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Frames per second.")
@click.option("--size", default="512x256", show_default=True, callback=options.size,
              help="Frame size WIDTHxHEIGHT (even sides; the benchmark's size by default).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same frames.")
@click.option("--speed", default=13.9, show_default=True, type=click.FloatRange(min=0),
              help="Ego speed in m/s (13.9 = 50 km/h).")
@click.option("--style", default="cityscapes", show_default=True, type=click.Choice(sorted(DOMAINS)),
              help="Rendering style and camera of a benchmark domain.")
@click.option("--force", is_flag=True, help="Overwrite an existing OUT.")
def synth_video(out, frames, fps, size, seed, speed, style, force):
    """Write OUT (.mp4, or .avi) of a camera driving through one procedural street, and its labels.

    Frames look like the synthetic benchmark's Cityscapes-style target frames (same style, camera and
    size), so a model trained on `jal-data synth` data can be shown segmenting a video with `jal-segment`.
    Every frame's exact labels go beside it as Cityscapes label ids (street.mp4 ->
    street_labelIds/street_000000_labelIds.png, ...), so `jal-segment street.mp4` scores the drive: mIoU,
    temporal consistency (TC) and flicker. Both appear only when complete.

    \b
    Example:
      jal-data synth-video street.mp4                      # 75 frames, 5 s at 15 fps, 512x256
      jal-data synth-video clips/long.mp4 --frames 150 --seed 3 --force
    """
    try:
        s = generate_video(out, seed=seed, frames=frames, fps=fps, size=size, speed=speed, style=style,
                           force=force, progress=True)
    except SynthError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot write {out}: {e}") from None
    w, h = s["size"]
    click.echo(f"Wrote {s['path']}: {s['frames']} frames at {w}x{h}, {s['fps']:g} fps ({s['duration']:g} s, "
               f"{s['metres']:g} m at {speed * 3.6:.0f} km/h, {style} style, {s['codec']}, seed {s['seed']}) "
               f"in {s['seconds']:.1f} s; labels in {s['labels']}.")
    click.echo(f"Next: jal-segment {s['path']} --model models/<model>.onnx --out runs/segment/street --temporal")
