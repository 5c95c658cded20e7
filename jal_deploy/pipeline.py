"""The threaded pipeline behind `Segmenter.stream` and `jal-segment`: decoding (+ resizing), inference and
post-processing overlap, connected by bounded queues so memory stays flat however long the video is.

    reader thread:  source -> decode -> pre-process   --q_in-->
    infer thread:   batch frames of one size -> backend --q_out-->
    caller:         upsample/argmax -> yield Prediction

With a second model (`compare`, what `jal-segment --compare` runs) each stage does the same for it, on the same
batches, so both models see every frame batched and ahead of the caller.

Live sources (cameras, streams) keep only the newest frame in `q_in` and count the frames they drop.
A stop event (Ctrl-C in jal-segment) ends reading; frames already read still come out, so every file the
caller writes is complete.

Video options (`temporal.py`): with `temporal` the caller's stage fuses each prediction with the previous
result warped by optical flow; with `vid_stride` > 1 and `fill="flow"` the frames the network skips get the
last result warped onto them ("repeat": the last result as it was). The flow runs on the frames the caller
receives, so live sources still drop frames rather than lag; a scene cut on a skipped frame runs the network
on that frame at once, since nothing from before the cut fits it.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from jal_deploy.sources import Item, Source
from jal_deploy.temporal import VideoState

STAGES = ("decode", "pre", "infer", "post", "encode")
COMPARE = "compare"  # the second model of `jal-segment --compare`, timed when there is one
FLOW = "flow"        # optical flow between frames (--temporal, --vid-stride with flow), timed when used
FILLS = ("flow", "repeat")  # what a frame --vid-stride skips shows
_END = object()
# The threads a run's stages share: each thread works through its stages one after the other, the threads
# overlap, so end-to-end speed is set by the busiest thread, not by the sum of all stages.
THREADS = {"reader": ("decode", "pre"), "network": ("infer", COMPARE), "main": ("post", FLOW, "score"),
           "writer": ("encode",)}


@dataclass
class Stats:
    """Seconds spent per stage (summed over threads) and counts; FPS is frames over wall time."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0          # frames that came out (predicted or reused)
    inferred: int = 0        # frames that went through the network
    batches: int = 0
    dropped: int = 0         # live frames dropped because inference was busy
    wall: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    @property
    def inference_fps(self) -> float:
        """Frames per second of the backend call alone (what `bench/runtime.py` calls raw)."""
        return self.inferred / self.seconds["infer"] if self.seconds["infer"] > 0 else 0.0

    def ms_per_frame(self) -> dict[str, float]:
        """pre, infer and compare per frame that went through the network; the other stages per output frame."""
        return {s: 1000.0 * v / max(self.inferred if s in ("pre", "infer", COMPARE) else self.frames, 1)
                for s, v in self.seconds.items()}

    def busy(self) -> dict[str, float]:
        """Share of the wall time each thread spent working (the rest it waited on a queue)."""
        return {name: sum(self.seconds.get(s, 0.0) for s in stages) / self.wall if self.wall > 0 else 0.0
                for name, stages in THREADS.items()}

    def bound(self) -> tuple[str, float]:
        """The busiest thread and its busy share: the stage group that sets the end-to-end speed. A share well
        under 1 for every thread means they competed for too few CPU cores (or the source fed them slowly)."""
        return max(self.busy().items(), key=lambda kv: kv[1])

    def to_dict(self) -> dict:
        name, share = self.bound()
        return {"frames": self.frames, "inferred": self.inferred, "batches": self.batches, "dropped": self.dropped,
                "wall_s": round(self.wall, 3), "fps": round(self.fps, 2), "inference_fps": round(self.inference_fps, 2),
                "ms_per_frame": {k: round(v, 2) for k, v in self.ms_per_frame().items()},
                "busy": {k: round(v, 3) for k, v in self.busy().items()}, "bound": name, "bound_busy": round(share, 3)}

    def line(self) -> str:
        ms = self.ms_per_frame()
        stages = ", ".join(f"{s} {ms[s]:.1f}" for s in ms)
        name, share = self.bound()
        groups = "+".join(s for s in THREADS[name] if self.seconds.get(s))
        return (f"{self.frames} frames in {self.wall:.1f} s: {self.fps:.1f} FPS end to end, "
                f"{self.inference_fps:.1f} FPS inference; ms/frame: {stages}; "
                f"bound by the {name} thread ({groups or 'idle'}, busy {100 * share:.0f} % of the time)")


@dataclass
class Prediction:
    item: Item
    labels: np.ndarray | None   # (H, W) uint8 at the frame's size; None for an item that failed to decode
    reused: bool = False        # --vid-stride: the last prediction (warped onto this frame with fill="flow")
    other: np.ndarray | None = None  # the second model's labels (`compare`), like `labels`


class _Worker(threading.Thread):
    """A daemon thread whose exception is re-raised in the consumer."""

    def __init__(self, target, name):
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self):
        try:
            self._target_fn()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.error = e


def _fit(labels: np.ndarray | None, frame: np.ndarray) -> np.ndarray | None:
    """A reused prediction at the frame's size (nearest: labels are classes)."""
    if labels is None or labels.shape == frame.shape[:2]:
        return labels
    return cv2.resize(labels, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)


def _with_flow(video: VideoState, models, frame: np.ndarray, output, stats: Stats):
    """(labels, other, reused) of one frame with the video options on: flow, then fusion or propagation."""
    h, w = frame.shape[:2]
    t = time.perf_counter()
    motion = video.motion(frame)
    stats.add(FLOW, time.perf_counter() - t)
    if output is None and video.propagate and (motion is None or motion.cut):  # nothing before fits: run the network
        output = []
        for model, stage in zip(models, ("infer", COMPARE)):
            t = time.perf_counter()
            output.append(model.infer(model.preprocess(frame)[None])[0])
            stats.add(stage, time.perf_counter() - t)
        stats.inferred += 1
    t = time.perf_counter()
    labels = video.key(output, w, h, motion) if output is not None else video.skipped(w, h, motion)
    stats.add("post", time.perf_counter() - t)  # upsampling, and fusion or warping
    return labels[0], labels[1] if len(labels) > 1 else None, output is None


def _put(q: queue.Queue, value, stop: threading.Event) -> bool:
    """Blocking put that gives up when the pipeline is stopped (so no thread hangs on a full queue)."""
    while not stop.is_set():
        try:
            q.put(value, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def predictions(segmenter, source: Source, batch: int = 1, vid_stride: int = 1, stats: Stats | None = None,
                stop: threading.Event | None = None, queue_size: int | None = None,
                compare=None, temporal: bool = False, fill: str = "flow") -> Iterator[Prediction]:
    """Yield a `Prediction` per source item, in order. `stop` ends reading early (Ctrl-C). `compare`: a second
    `Segmenter` whose labels come as `Prediction.other` (its inference is timed as the `compare` stage).
    `temporal`: fuse each prediction with the flow-warped past; `fill`: what frames skipped by `vid_stride`
    show, "flow" (the last result warped onto them) or "repeat" (the last result unchanged)."""
    if batch < 1 or vid_stride < 1:
        raise ValueError("batch and vid_stride must be >= 1")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    stats = stats if stats is not None else Stats()
    models = (segmenter,) if compare is None else (segmenter, compare)  # each stage runs them all, in this order
    stats.started = time.perf_counter()
    stop = stop if stop is not None else threading.Event()
    halt = threading.Event()  # internal: the consumer went away or a thread failed
    depth = queue_size or 2 * batch + 2
    q_in: queue.Queue = queue.Queue(maxsize=1 if source.live else depth)
    q_out: queue.Queue = queue.Queue(maxsize=depth)

    def read():
        t = time.perf_counter()
        for item in source:
            stats.add("decode", time.perf_counter() - t)
            if stop.is_set() or halt.is_set():
                break
            item.infer = item.index % vid_stride == 0
            pre = None
            if item.frame is not None and item.infer:
                t = time.perf_counter()
                pre = tuple(m.preprocess(item.frame) for m in models)
                stats.add("pre", time.perf_counter() - t)
            if source.live:  # newest frame wins: drop what inference has not picked up yet
                try:
                    q_in.get_nowait()
                    stats.dropped += 1
                except queue.Empty:
                    pass
                q_in.put((item, pre))
            elif not _put(q_in, (item, pre), halt):
                break
            t = time.perf_counter()
        _put(q_in, _END, halt)

    def infer():
        pending: list[tuple[Item, tuple[np.ndarray, ...] | None]] = []  # inputs per model

        def flush():
            batch_in = [p for it, p in pending if p is not None]
            outputs = iter(())
            if batch_in:
                out = []
                for i, (model, stage) in enumerate(zip(models, ("infer", COMPARE))):
                    t = time.perf_counter()
                    out.append(model.infer(np.stack([p[i] for p in batch_in])))
                    stats.add(stage, time.perf_counter() - t)
                stats.inferred += len(batch_in)
                stats.batches += 1
                outputs = zip(*out)  # per frame: one output per model
            for it, p in pending:
                if not _put(q_out, (it, next(outputs) if p is not None else None), halt):
                    return
            pending.clear()

        while True:
            try:
                got = q_in.get(timeout=0.1)
            except queue.Empty:
                if halt.is_set():
                    return
                continue
            if got is _END:
                break
            item, pre = got
            if pre is not None and pending:
                ready = [p for _, p in pending if p is not None]
                if ready and [r.shape for r in ready[0]] != [q.shape for q in pre]:
                    flush()  # one batch holds one size
            pending.append((item, pre))
            if sum(p is not None for _, p in pending) >= batch or source.live:
                flush()
        flush()
        _put(q_out, _END, halt)

    workers = [_Worker(read, "jal-read"), _Worker(infer, "jal-infer")]
    for w in workers:
        w.start()
    previous = previous_other = None
    propagate = vid_stride > 1 and fill == "flow"
    video = VideoState(models, fuse=temporal, propagate=propagate) if temporal or propagate else None
    try:
        while True:
            try:
                got = q_out.get(timeout=0.5)
            except queue.Empty:
                failed = [w for w in workers if w.error is not None]
                if failed:
                    raise failed[0].error
                continue
            if got is _END:
                break
            item, output = got
            other = None
            if item.frame is not None and video is not None:
                labels, other, reused = _with_flow(video, models, item.frame, output, stats)
            elif item.frame is None:
                labels, reused = None, False
            else:
                t = time.perf_counter()
                if output is not None:
                    h, w = item.frame.shape[:2]
                    labels, *others = [m.postprocess(o, w, h) for m, o in zip(models, output)]
                    other = others[0] if others else None
                    previous, previous_other, reused = labels, other, False
                else:  # --vid-stride: reuse the last prediction (resized if the frame size changed)
                    labels, other, reused = _fit(previous, item.frame), _fit(previous_other, item.frame), True
                stats.add("post", time.perf_counter() - t)
            stats.frames += 1
            yield Prediction(item, labels, reused, other)
        for w in workers:
            w.join()
            if w.error is not None:
                raise w.error
    finally:
        halt.set()
        for w in workers:
            w.join(timeout=5)
        stats.wall = time.perf_counter() - stats.started
