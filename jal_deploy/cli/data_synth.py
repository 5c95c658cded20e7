"""`jal-data synth`: generate the synthetic GTA5 / SYNTHIA / Cityscapes benchmark."""
from __future__ import annotations

import click

from jal_deploy.cli import options
from jal_deploy.synth import DEFAULT_COUNTS, DEFAULT_SIZE, SHIFTS, SynthError, generate


@click.command("synth", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder (new or empty).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same bytes.")
@click.option("--gta5", default=DEFAULT_COUNTS["gta5"], show_default=True, type=click.IntRange(min=0),
              help="GTA5-layout source frames.")
@click.option("--synthia", default=DEFAULT_COUNTS["synthia"], show_default=True, type=click.IntRange(min=0),
              help="SYNTHIA-layout source frames.")
@click.option("--cs-train", default=DEFAULT_COUNTS["cs_train"], show_default=True, type=click.IntRange(min=0),
              help="Cityscapes-layout target train frames (labelled, as Cityscapes; adaptation ignores labels).")
@click.option("--cs-val", default=DEFAULT_COUNTS["cs_val"], show_default=True, type=click.IntRange(min=0),
              help="Cityscapes-layout target val frames.")
@click.option("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", show_default=True, callback=options.size,
              help="Frame size WIDTHxHEIGHT for every domain.")
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Processes (default: CPU count, max 8).")
@click.option("--force", is_flag=True, help="Regenerate into a non-empty folder (replaces a previous synth).")
@click.option("--label-shift/--no-label-shift", default=True, show_default=True,
              help="Target streets greener than the sources' (fewer building blocks, more trees). "
                   "--no-label-shift gives them the GTA5 composition (docs/synthetic-benchmark.md). With "
                   "--shift geometry the family's own built-up streets take the place of the greener ones.")
@click.option("--shift", default="colour", show_default=True, type=click.Choice(SHIFTS),
              help="Kind of target shift (Cityscapes-layout frames only; the sources never change). "
                   "colour: the original target: real-camera look, lower camera with a hood, and "
                   "road<->sidewalk, building<->vegetation colour swaps. "
                   "appearance: no colour swap; GTA5's streets and camera seen with realism effects: coarser "
                   "texture, cast shadows, depth haze, S-curve tone, blur, sensor noise, JPEG. "
                   "geometry: no colour swap, GTA5's rendering; a low pitched-up long-lens camera, 15 % larger "
                   "vehicles, people and trees, wide built-up streets with about twice the traffic and "
                   "pedestrians, few trees. "
                   "weather: no colour swap; GTA5's streets and camera in fog and rain: depth fog, rain streaks, "
                   "no sun, dull colours, lower exposure (docs/synthetic-shifts.md).")
def synth(out, seed, gta5, synthia, cs_train, cs_val, size, workers, force, label_shift, shift):
    """Generate a small procedural street benchmark in the real GTA5, SYNTHIA and Cityscapes layouts.

    By default (--shift colour) the target (Cityscapes layout) differs from the sources in appearance, camera
    and class statistics, and swaps road<->sidewalk and building<->vegetation colours, so a source-only model
    makes structurally implausible predictions there that output-space adaptation can correct
    (docs/synthetic-benchmark.md). --shift appearance, weather and geometry give targets that differ by realism alone,
    by weather alone, or by camera geometry and class frequencies alone, to judge adaptation on other kinds
    of shift.

    \b
    Example:
      jal-data synth --out data/synth                      # 200/200/200/100 frames at 512x256
      jal-data synth --out data/tiny --gta5 20 --synthia 20 --cs-train 20 --cs-val 10 --size 256x128
      jal-data synth --out data/synth-geometry --shift geometry
    """
    counts = {"gta5": gta5, "synthia": synthia, "cs_train": cs_train, "cs_val": cs_val}
    try:
        s = generate(out, seed=seed, counts=counts, size=size, force=force, progress=True, workers=workers,
                     label_shift=label_shift, shift=shift)
    except SynthError as e:
        raise click.ClickException(str(e)) from None
    w, h = s["size"]
    click.echo(f"Wrote {s['frames']} frames at {w}x{h} to {s['out']} in {s['seconds']:.1f} s "
               f"({s['workers']} workers, seed {s['seed']}, target shift {s['shift']}):")
    for sub, n in s["counts"].items():
        if n:
            frac = s["class_pixel_fraction"][sub]
            top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(frac.items(), key=lambda kv: -kv[1])[:4])
            click.echo(f"  {sub:9s} {n:5d} frames   list {s['lists'][sub]}   ({top}, ...)")
    click.echo(f"Manifest: {s['out']}/synth.json (seed, counts, styles, class frequencies).")
    root = s["out"]
    click.echo("Next: check the trees, then point a training preset's source/target roots at them:")
    click.echo(f"  jal-data check {root}/gta5 --format gta5 --list {root}/gta5/train.txt")
    click.echo(f"  jal-data check {root}/synthia --format synthia")
    click.echo(f"  jal-data check {root}/cityscapes --format cityscapes --split val")
    click.echo(f"  (source root {root}/gta5 or {root}/synthia, target root {root}/cityscapes)")
