"""`run_job`: what `jal-segment` does with a model and a source: predictions from the pipeline, files and
video written by a writer thread (so encoding overlaps inference), mIoU on labelled trees, `report.json`.

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
from jal_deploy.evaluation import Evaluation
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

    @property
    def exit_code(self) -> int:
        """0 all done; 130 interrupted (Ctrl-C); 1 done with skipped items or a truncated source."""
        if self.status == "interrupted":
            return 130
        return 1 if self.skipped or self.status != "finished" else 0


def default_saves(source: Source) -> tuple[str, ...]:
    return ("video",) if source.kind in ("video", "camera", "stream") else ("overlay",)


def display_available() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_job(segmenter, source: Source, out: str | Path, save: tuple[str, ...] | None = None, opacity: float = 0.5,
            batch: int = 1, vid_stride: int = 1, codec: str = "mp4v", video_style: str = "overlay",
            show: bool = False, stop: threading.Event | None = None, progress: bool = True, log=print) -> JobResult:
    out = Path(out)
    save = default_saves(source) if save is None else tuple(save)
    if "video" in save and source.kind not in ("video", "camera", "stream"):
        raise OutputError(f"--save video needs a video, camera or stream source, not a {source.kind}")
    check_writable(out)
    stop = stop or threading.Event()
    stats = Stats()
    files = FrameFiles(out, save, segmenter, opacity)
    video = None
    if "video" in save:
        stem = getattr(source, "stem", "video")
        video = VideoFile(out / f"{stem}{CODECS.get(codec, '.mp4')}", source.fps or 25.0, codec)
    evaluation = Evaluation(segmenter.info.protocol, source.fmt) if source.labelled else None
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
            item, labels = got
            t = time.perf_counter()
            try:
                if labels is not None:
                    files.write(item.name, item.frame, labels)
                if video is not None:
                    if labels is not None:
                        last_rendered["frame"] = files.render(video_style, item.frame, labels)
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
        for pred in predictions(segmenter, source, batch=batch, vid_stride=vid_stride, stats=stats, stop=stop):
            item = pred.item
            if item.error:
                result.skipped.append({"item": item.name, "error": item.error})
                if bar is not None:
                    bar.write(f"skipped: {item.error}")
            elif evaluation is not None and item.label is not None:
                t = time.perf_counter()
                evaluation.update(pred.labels, item.label)
                stats.add("post", time.perf_counter() - t)
            if writer_error:
                break  # reported below, after the video is finalised
            q.put((item, pred.labels))
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
              "timing": stats.to_dict(), "vid_stride": vid_stride, "batch": batch,
              "inference_size": "dynamic" if segmenter.size is None else list(segmenter.size),
              "upsampling": "labels, nearest" if segmenter.info.output == "labels" else "logits, bilinear align_corners"}
    if evaluation is not None and evaluation.images:
        result.metrics = evaluation.results()
        result.table = evaluation.table()
        report.update(result.metrics)
    result.report = out / "report.json"
    write_text(result.report, json.dumps(report, indent=2) + "\n")
    return result
