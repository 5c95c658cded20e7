"""`run_job`: what `jal-segment` does with a model and a source: predictions from the pipeline, files and
video written by a writer thread (so encoding overlaps inference), mIoU on labelled trees and videos (with
TC and the flicker rate on videos), `report.json`.
With a second model (`compare`), both segment every frame: their agreement, both mIoU tables and the
per-class delta, captioned side-by-side images and video.

Nothing is left half-written: images are written atomically, the video is finalised on every exit
(finished, failed frame, Ctrl-C) and the report says which items were skipped and why.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jal_deploy.atomic import write_text
from jal_deploy.evaluation import Evaluation, VideoConsistency, confusion_lines, summary_name
from jal_deploy.metrics import Agreement, format_compare_table
from jal_deploy.outputs import CODECS, FrameFiles, OutputError, VideoFile, check_writable
from jal_deploy.pipeline import Stats, predictions
from jal_deploy.sources import Source

_END = object()


@dataclass
class JobResult:
    status: str                      # finished | interrupted | truncated
    stats: Stats
    skipped: list[dict] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    metrics: dict | None = None
    table: str | None = None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)
    compare: dict | None = None      # with a second model: its name, agreement and (labelled trees) metrics

    @property
    def exit_code(self) -> int:
        """0 all done; 130 interrupted (Ctrl-C); 1 done with skipped items or a truncated source."""
        if self.status == "interrupted":
            return 130
        return 1 if self.skipped or self.status != "finished" else 0


def default_saves(source: Source, compare: bool = False) -> tuple[str, ...]:
    if source.kind in ("video", "camera", "stream"):
        return ("video",)
    return ("compare",) if compare else ("overlay",)


def model_names(a: str | Path, b: str | Path) -> tuple[str, str]:
    """Captions for two models: their file names without the suffix, with the folder when those are equal."""
    a, b = Path(a), Path(b)
    if a.stem != b.stem:
        return a.stem, b.stem
    return f"{a.parent.name}/{a.stem}", f"{b.parent.name}/{b.stem}"


def _check_comparable(segmenter, compare) -> None:
    if compare.info.protocol != segmenter.info.protocol:
        raise OutputError(f"cannot compare a model predicting the {segmenter.info.protocol}-class protocol with "
                          f"one predicting {compare.info.protocol} classes: both must predict the same classes")


def display_available() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_job(segmenter, source: Source, out: str | Path, save: tuple[str, ...] | None = None, opacity: float = 0.5,
            batch: int = 1, vid_stride: int = 1, codec: str = "mp4v", video_style: str = "overlay",
            show: bool = False, stop: threading.Event | None = None, progress: bool = True, log=print,
            compare=None, names: tuple[str, str] | None = None, temporal: bool = False, fill: str = "flow",
            score: bool = True) -> JobResult:
    """`compare`: a second `Segmenter` run on the same frames (`names`: the two captions, default the file
    names); the video then shows both side by side. `temporal`, `fill`: the video options of
    `pipeline.predictions`. `score=False` leaves a labelled source unscored (timing without the scoring's cost)."""
    out = Path(out)
    save = default_saves(source, compare is not None) if save is None else tuple(save)
    if "video" in save and source.kind not in ("video", "camera", "stream"):
        raise OutputError(f"--save video needs a video, camera or stream source, not a {source.kind}")
    if compare is not None:
        _check_comparable(segmenter, compare)
        names = names or model_names(segmenter.backend.path, compare.backend.path)
    files = FrameFiles(out, save, segmenter, opacity, names=names if compare is not None else None)
    check_writable(out)
    stop = stop or threading.Event()
    stats = Stats()
    video = None
    if "video" in save:
        stem = getattr(source, "stem", "video")
        video = VideoFile(out / f"{stem}{CODECS.get(codec, '.mp4')}", source.fps or 25.0, codec)
    scored = score and source.labelled
    source.read_labels = scored  # an unscored run does not pay for reading the label files
    evaluation = Evaluation(segmenter.info.protocol, source.fmt) if scored else None
    evaluation_b = Evaluation(compare.info.protocol, source.fmt) if scored and compare is not None else None
    steady = VideoConsistency() if scored and source.kind == "video" else None
    steady_b = VideoConsistency() if steady is not None and compare is not None else None
    agreement = Agreement()
    if show and not display_available():
        log("No display found (DISPLAY/WAYLAND_DISPLAY unset): --show is ignored.")
        show = False

    q: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    writer_error: list[BaseException] = []
    last_rendered = {}

    def write_loop():
        while True:
            got = q.get()
            if got is _END:
                return
            if writer_error:
                continue  # keep draining so the producer never blocks
            item, labels, other = got
            t = time.perf_counter()
            try:
                if labels is not None:
                    files.write(item.name, item.frame, labels, other)
                if video is not None:
                    if labels is not None:
                        last_rendered["frame"] = (files.render(video_style, item.frame, labels) if other is None
                                                  else files.render_pair(video_style, item.frame, labels, other))
                    if "frame" in last_rendered:  # an undecodable frame repeats the last one: timing is kept
                        video.write(last_rendered["frame"])
            except BaseException as e:  # noqa: BLE001 - reported by the consumer
                writer_error.append(e)
            stats.add("encode", time.perf_counter() - t)

    writer = threading.Thread(target=write_loop, name="jal-write", daemon=True)
    writer.start()
    result = JobResult("finished", stats)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=source.length, unit="frame", desc="jal-segment", dynamic_ncols=True, leave=True)
    try:
        for pred in predictions(segmenter, source, batch=batch, vid_stride=vid_stride, stats=stats, stop=stop,
                                compare=compare, temporal=temporal, fill=fill):
            item, other = pred.item, pred.other
            if other is not None:
                agreement.update(pred.labels, other)
            if item.error:
                result.skipped.append({"item": item.name, "error": item.error})
                if bar is not None:
                    bar.write(f"skipped: {item.error}")
            if evaluation is not None and item.label is not None and not item.error:
                t = time.perf_counter()
                evaluation.update(pred.labels, item.label)
                if evaluation_b is not None:
                    evaluation_b.update(other, item.label)
                for s, labels in ((steady, pred.labels), (steady_b, other)):
                    if s is not None:
                        s.update(item.frame, labels, item.label)
                stats.add("score", time.perf_counter() - t)
            else:
                for s in (steady, steady_b):
                    if s is not None:
                        s.gap()
            if writer_error:
                break  # reported below, after the video is finalised
            q.put((item, pred.labels, other if pred.labels is not None else None))
            if show and pred.labels is not None:
                import cv2
                cv2.imshow("jal-segment (q to stop)", segmenter.overlay(item.frame, pred.labels, opacity))
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    stop.set()
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:  # a second Ctrl-C (the first only sets `stop`) or an embedding program's
        stop.set()
    finally:
        q.put(_END)
        writer.join()
        if bar is not None:
            bar.close()
        if show:
            import cv2
            cv2.destroyAllWindows()
        if video is not None:
            if writer_error and video.frames == 0:
                video.abort()
            else:
                path = video.close()
                if path:
                    result.outputs["video"] = {"path": str(path), "frames": video.frames, "fps": video.fps,
                                               "codec": codec}
    if writer_error:
        error = writer_error[0]
        raise error if isinstance(error, OutputError) else OutputError(f"writing the outputs failed: {error}")
    result.status = "interrupted" if stop.is_set() else source.status
    result.notes = list(source.notes) + list(segmenter.backend.notes)
    for kind, n in files.counts.items():
        result.outputs[kind] = {"folder": str(out / files.path(kind, "x").parent.name), "files": n}
    report = {"source": source.description, "model": str(segmenter.backend.path), "backend": segmenter.describe(),
              "status": result.status, "skipped": result.skipped, "notes": result.notes, "outputs": result.outputs,
              "timing": stats.to_dict(), "vid_stride": vid_stride, "batch": batch, "temporal": temporal,
              "stride_fill": fill if vid_stride > 1 else None,
              "inference_size": "dynamic" if segmenter.size is None else list(segmenter.size),
              "upsampling": "labels, nearest" if segmenter.info.output == "labels" else
              f"{segmenter.info.output}, bilinear align_corners"}
    if evaluation is not None and evaluation.images:
        result.metrics = evaluation.results()
        if steady is not None:
            result.metrics.update(steady.results())
        result.table = evaluation.table(result.metrics)
        report.update(result.metrics)
    if compare is not None:
        result.compare = _comparison(compare, names, agreement, result.metrics, evaluation_b)
        if steady_b is not None and "miou" in result.compare:
            result.compare.update(steady_b.results())
        if evaluation_b is not None and evaluation_b.images:
            result.table = _compare_table(names, result.metrics, result.compare)
        report["compare"] = result.compare
    result.report = out / "report.json"
    write_text(result.report, json.dumps(report, indent=2) + "\n")
    return result


def _comparison(compare, names, agreement: Agreement, metrics: dict | None, evaluation: Evaluation | None) -> dict:
    doc = {"model": str(compare.backend.path), "backend": compare.describe(), "names": list(names),
           "agreement": None if agreement.total == 0 else agreement.percent, "pixels": agreement.total}
    if evaluation is not None and evaluation.images:
        other = evaluation.results()
        doc.update(other)
        doc["miou_delta"] = (None if metrics["miou"] is None or other["miou"] is None
                             else other["miou"] - metrics["miou"])
        doc["per_class_delta"] = {k: None if v is None or other["per_class"][k] is None else other["per_class"][k] - v
                                  for k, v in metrics["per_class"].items()}
    return doc


def _compare_table(names, metrics: dict, compare: dict) -> str:
    summary = {summary_name(n): (metrics["protocols"][n]["miou"], compare["protocols"][n]["miou"])
               for n in metrics["protocols"]}
    return format_compare_table(metrics["per_class"], compare["per_class"], names[0], names[1], summary=summary,
                                title=f"{metrics['images']} images, protocol {metrics['protocol']}; "
                                      f"pixel agreement {compare['agreement']:.2f} %") + \
        confusion_lines(metrics, names[0]) + confusion_lines(compare, names[1])
