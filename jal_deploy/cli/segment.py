"""`jal-segment`: thin Click shell over `Segmenter` + `run_job`."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click

from jal_deploy.cli import options
from jal_deploy.backends import BACKENDS, DEVICES, PRECISIONS
from jal_deploy.outputs import CODECS, KINDS, VIDEO_STYLES


def _kinds(ctx, param, values):
    kinds = [k.strip() for v in values for k in v.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS) - {"none"})
    if unknown:
        raise click.BadParameter(f"unknown output kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}, none")
    if not kinds:
        return None  # the default for the source
    return tuple(k for k in kinds if k != "none")  # "none": metrics/timing only


def _default_out(source: str) -> Path:
    fmt, sep, rest = source.partition(":")
    name = Path(rest if sep and not rest.startswith("//") else source).name or "source"
    name = name.replace("*", "").replace("?", "") or "glob"
    return Path("runs") / "segment" / (Path(name).stem if "." in name else name)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  jal-segment street.mp4 -m models/jal-wtm-synthetic.onnx              # annotated video in runs/segment/street
  jal-segment cityscapes:data/cityscapes -m model.onnx --save labelid  # val mIoU + evaluator-ready PNGs
  jal-segment "frames/*.png" -m model.int8.onnx --save overlay,color --batch 4
  jal-segment 0 -m r101.fp16.engine --show                             # camera 0 on a GPU with TensorRT
  jal-segment cityscapes:data/val -m adapted.onnx --compare source-only.onnx  # both tables, delta, agreement
  jal-segment drive.mp4 -m model.scores.onnx --temporal                # steadier masks (flow-guided fusion)
  jal-segment drive.mp4 -m model.onnx --vid-stride 3                   # ~3x faster, masks follow the flow
\b
SOURCE: an image, a folder, a glob (quoted), a video file, a camera index, a stream URL, or a labelled
tree as cityscapes:PATH (--split, default val), gta5:PATH or synthia:PATH. A video with per-frame labels
beside it (drive.mp4 + drive_labelIds/, as `jal-data synth-video` writes) is scored: mIoU, TC, flicker.
Exit status: 0 done, 1 done with skipped items (listed) or an error, 130 interrupted (outputs finalised).
""")
@click.argument("source")
@click.option("-m", "--model", required=True, type=click.Path(dir_okay=False),
              help="Exported artefact: .onnx, .engine/.plan (with its .json sidecar) or .pt2.")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder [default: runs/segment/<source>].")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto picks a GPU when the backend has one; an explicit GPU request never falls back to CPU.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Override the backend chosen from the file suffix.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="torch backend only: autocast dtype (ONNX/TensorRT artefacts carry their precision).")
@click.option("--size", callback=options.size, metavar="WxH",
              help="Inference size [default: the model's training width, the frame's aspect ratio].")
@click.option("--save", "save", multiple=True, callback=_kinds, metavar="KINDS",
              help=f"Comma-separated outputs: {', '.join(KINDS)}, none "
                   "[default: video for videos/cameras/streams, overlay otherwise].")
@click.option("--compare", "compare_model", type=click.Path(dir_okay=False), metavar="OTHER_MODEL",
              help="Also run this artefact on the same frames: pixel agreement, both mIoU tables with the per-class "
                   "delta (labelled trees), captioned side-by-side images (compare/) and video.")
@click.option("--opacity", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--video-style", type=click.Choice(VIDEO_STYLES), default="overlay", show_default=True,
              help="What the annotated video shows.")
@click.option("--codec", type=click.Choice(list(CODECS)), default="mp4v", show_default=True,
              help="Video codec (h264 needs the PyAV extra: pip install 'jal-deploy[video]').")
@click.option("--vid-stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the network on every N-th video frame; the others get its result (see --stride-fill; "
                   "with flow, a scene cut on a skipped frame runs the network on it).")
@click.option("--stride-fill", type=click.Choice(["flow", "repeat"]), default="flow", show_default=True,
              help="What frames skipped by --vid-stride show: the last result warped along the optical flow "
                   "(follows the moving scene), or repeated unchanged (the cheapest; lags behind motion).")
@click.option("--temporal", is_flag=True,
              help="Fuse each frame's prediction with the previous result warped by optical flow: steadier masks "
                   "(less flicker) for a few ms per frame. Occluded pixels and scene cuts use the frame alone. "
                   "Steadiest with a model that returns class scores (jal-export --output scores): about a third "
                   "less flicker; with labels only about a quarter.")
@click.option("--score/--no-score", default=True, show_default=True,
              help="Score labelled sources (mIoU; on videos also TC and flicker). --no-score times a run without "
                   "the scoring's cost.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Frames per inference call (folders and datasets).")
@click.option("--split", help="Dataset split for cityscapes:PATH [default: val].")
@click.option("--list", "list_file", type=click.Path(dir_okay=False), help="Dataset list file restricting the images.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many images/frames.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for inference [default: the backend's].")
@click.option("--show", is_flag=True, help="Show a live window (needs a display; q stops).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(source, model, out, device, backend, precision, size, save, compare_model, opacity, video_style, codec, vid_stride,
         stride_fill, temporal, score, batch, split, list_file, limit, threads, show, progress) -> None:
    """Segment SOURCE with an exported model; report FPS, and mIoU on labelled trees and videos.

    Writes the outputs asked for and report.json (timing, skipped items, and for labelled sources `miou`,
    `per_class`, the confusion matrix and its largest errors; for labelled videos also `tc` and `flicker`)
    under --out.
    """
    from jal_deploy.backends import BackendError
    from jal_deploy.job import run_job
    from jal_deploy.outputs import OutputError
    from jal_deploy.segmenter import Segmenter
    from jal_deploy.sources import SourceError, open_source

    # The pipeline's decode/encode threads share the cores with torch's OpenMP pool (.pt2 backend): idle
    # OpenMP threads that spin starve them (measured ~1.5x slower inference). Only effective before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = Path(out) if out else _default_out(source)
    try:
        src = open_source(source, split=split, list_file=list_file, limit=limit)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    seg = other = None
    try:
        seg = Segmenter.from_path(model, device=device, backend=backend, precision=precision, size=size,
                                  threads=threads)
        if compare_model:
            other = Segmenter.from_path(compare_model, device=device, precision=precision, size=size, threads=threads)
    except (BackendError, ValueError) as e:
        src.close()
        if seg is not None:
            seg.close()
        raise click.ClickException(f"{compare_model}: {e}" if seg is not None else str(e)) from None
    for note in (*src.notes, *seg.backend.notes):  # before the run: a wrong source or device shows at once
        click.echo(f"Note: {note}", err=True)
    click.echo(f"{src.description} -> {seg.describe()}" + (f" vs {other.describe()}" if other else "") + f" -> {out}",
               err=True)
    stop = threading.Event()
    previous = _install_sigint(stop)
    try:
        result = run_job(seg, src, out, save=save, opacity=opacity, batch=batch, vid_stride=vid_stride, codec=codec,
                         video_style=video_style, show=show, stop=stop, progress=progress,
                         log=lambda m: click.echo(m, err=True), compare=other, temporal=temporal, fill=stride_fill,
                         score=score)
    except (OutputError, BackendError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        src.close()
        seg.close()
        if other is not None:
            other.close()
    _print_result(result, out)
    sys.exit(result.exit_code)


def _install_sigint(stop: threading.Event):
    """First Ctrl-C: stop reading, finish the frames in flight, finalise every file. Second: abort."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("\nStopping: finishing the frames in flight and finalising outputs (Ctrl-C again to abort).",
                   err=True)

    return signal.signal(signal.SIGINT, handler)


def _print_result(result, out: Path) -> None:
    if result.table:
        click.echo(result.table)
    if result.metrics and result.metrics.get("tc_pairs"):
        click.echo(_steadiness(result.metrics, result.stats.fps))
        if result.compare is not None and result.compare.get("tc") is not None:
            click.echo(f"{result.compare['names'][1]}: " + _steadiness(result.compare, None))
    click.echo(result.stats.line())
    if result.compare is not None and result.compare["agreement"] is not None:
        a, b = result.compare["names"]
        click.echo(f"{a} and {b} agree on {result.compare['agreement']:.2f} % of {result.compare['pixels']} pixels")
    for note in result.notes:
        click.echo(f"Note: {note}")
    if result.skipped:
        click.echo(f"Skipped {len(result.skipped)} item(s):")
        for s in result.skipped[:10]:
            click.echo(f"  {s['item']}: {s['error']}")
        if len(result.skipped) > 10:
            click.echo(f"  ... and {len(result.skipped) - 10} more (all in {result.report})")
    for kind, o in result.outputs.items():
        if kind == "video":
            click.echo(f"Video: {o['path']} ({o['frames']} frames at {o['fps']:.2f} fps, {o['codec']})")
        elif o["files"]:
            click.echo(f"{kind}: {o['files']} files in {o['folder']}")
    click.echo(f"Report: {result.report}" + (" (interrupted: outputs finalised up to the last frame)"
                                              if result.status == "interrupted" else ""))
    if "labelid" in result.outputs and result.metrics:
        click.echo(f"Official evaluator: CITYSCAPES_RESULTS={out}/labelIds CITYSCAPES_DATASET=<root> "
                   "csEvalPixelLevelSemanticLabeling")


def _steadiness(m: dict, fps: float | None) -> str:
    """One line: mIoU, TC and flicker of a labelled video (and the run's FPS)."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    return (f"Video: mIoU {pct(m['miou'])}, TC {pct(m['tc'])}, flicker {pct(m['flicker'])} "
            f"over {m['images']} frames" + (f", {fps:.1f} FPS" if fps is not None else ""))


if __name__ == "__main__":
    main()
