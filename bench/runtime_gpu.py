#!/usr/bin/env python
"""The runtime on a GPU: the R101 deploy graph (Enc + folded Dec2^T + upsample + argmax, uint8 frames in,
labels out) exported with torch.export and run through jal_deploy's torch backend at batch 1 and 8, 1024x512;
each speed option of the backend measured on its own (`OPTIONS`), the fp16/bf16 labels of the deployed path
against fp32 on a trained network's street frames, `jal-segment`'s pipeline end to end, and how fast a second
process starts from the compile cache.

Per setting: `backend` FPS calls the backend batch by batch (host->device copy of the frames, device->host copy of
the labels: what an application sees), `stream` FPS feeds it through `run_many` (batch k+1 uploads while batch k
computes), `graph` FPS runs on frames already on the GPU. The first call at each shape (compile, CUDA graph
capture) is timed apart and never inside those numbers. Speed runs on --checkpoint's network, else on random
weights (their BatchNorm statistics estimated so that activations stay in a trained network's range: speed does
not depend on the weights). Parity does depend on them: it is measured on --checkpoint only, never on random
weights. Needs torch, OpenCV and this source tree only (no ONNX tools, no TensorRT). Results go to --json after
every measurement, so a time limit loses only the rest (the table names what it did not reach);
`--summary TRAIN_LOG JSON` prints the one table bench/gpu_check.sh ends with.

    python bench/runtime_gpu.py --checkpoint r101.pth --frames '/data/cityscapes/leftImg8bit/val/frankfurt/*.png'
    python bench/runtime_gpu.py --device cpu --arch deeplabv2-r18 --width 0.125 --size 128x64 --iters 2 \
        --options eager compile pad24
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jal_deploy.atomic import write_text

from gpu_summary import seconds_text, summary

# Torch backend settings, each measured on its own: name -> (TorchOptions text, classifier padding). Each adds
# one thing to the one above it, except `fast`, the backend's default on CUDA, and max_autotune, which adds
# inductor's kernel tuning to it; pad24/pad32 are cuda_graphs on a graph whose classifier is padded at export
# (compared with cuda_graphs: the same cuDNN convolutions, without a compile per padding).
OPTIONS = {
    "eager": ("eager", None),
    "channels_last": ("eager,channels_last=on,cudnn_benchmark=on", None),
    "pinned": ("eager,channels_last=on,cudnn_benchmark=on,pinned=on", None),
    "cuda_graphs": ("eager,channels_last=on,cudnn_benchmark=on,graphs=on", None),
    "compile": ("eager,channels_last=on,cudnn_benchmark=on,compile=default,freeze=on", None),
    "fast": ("", None),
    "pad24": ("eager,channels_last=on,cudnn_benchmark=on,graphs=on", 24),
    "pad32": ("eager,channels_last=on,cudnn_benchmark=on,graphs=on", 32),
    "max_autotune": ("compile=max-autotune", None),  # minutes per shape on R101: measured last
}
# The order a run measures in: the reference and the default first, then the cheap one-option rows, then what
# compiles again (bf16, compile alone), max-autotune last (a time limit cuts the end, and the table says so).
PLAN = [("eager", "fp32"), ("fast", "fp16"), ("eager", "fp16"), ("eager", "bf16"), ("channels_last", "fp16"),
        ("pinned", "fp16"), ("cuda_graphs", "fp16"), ("pad24", "fp16"), ("pad32", "fp16"), ("fast", "bf16"),
        ("compile", "fp16"), ("max_autotune", "fp16")]


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(torch, fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(torch)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(torch)
    return time.perf_counter() - start


class Results:
    """Measurements as they come, rewritten to `path` each time (a killed run keeps what it measured)."""

    def __init__(self, path: str | None, device: str, planned: list):
        self.path = path
        self.data = {"device": device, "planned": planned, "speed": [], "parity": [], "end_to_end": None}

    def add(self, section: str, row) -> None:
        if isinstance(self.data[section], list):
            self.data[section].append(row)
        else:
            self.data[section] = row
        if self.path:  # atomic: a time limit that kills the process mid-write leaves the previous file
            write_text(self.path, json.dumps(self.data, indent=2))


def measure(torch, backend, frames: np.ndarray, dev: str, iters: int, warmup: int) -> dict:
    """Steady-state speeds of a backend whose first call at this shape is done (`backend.warmup`)."""
    b = len(frames)
    on_device = torch.from_numpy(frames).to(dev)
    seconds = timed(torch, lambda: backend(frames), iters, warmup)
    stream = timed(torch, lambda: sum(1 for _ in backend.run_many(frames for _ in range(iters))), 1, 1)
    with torch.inference_mode(), backend._autocast():
        graph = timed(torch, lambda: backend.forward(on_device), iters, warmup)
    return {"backend_fps": b * iters / seconds, "stream_fps": b * iters / stream, "graph_fps": b * iters / graph,
            "ms_per_batch": 1000 * seconds / iters}


class Programs:
    """The exported deploy program of the network, and of its padded-classifier variants, each exported once."""

    def __init__(self, net, info, folder: Path):
        self.net, self.info, self.folder, self.paths = net, info, folder, {}

    def path(self, pad: int | None) -> Path:
        if pad not in self.paths:
            from export.deploy import pad_classifier
            from export.torch_program import export_program
            net = self.net
            if pad:
                net = copy.deepcopy(self.net)
                net.decoder, net.padded = pad_classifier(net.decoder, pad), True
            self.paths[pad] = export_program(net, self.info, self.folder / f"deploy-pad{pad or 0}.pt2")
        return self.paths[pad]


def backend_for(programs: Programs, option: str, precision: str, dev: str, cache: Path):
    from jal_deploy.backends.torch_backend import TorchBackend
    text, pad = OPTIONS[option]
    # an explicit cache folder of this run's own: compile times are those of a machine that never compiled
    options = ",".join(filter(None, [text, f"cache_dir={cache}"]))
    return TorchBackend(programs.path(pad), device=dev, precision=precision, options=options)


def speed_rows(torch, programs: Programs, args, dev, results, plan, cache: Path, on_fast=None) -> None:
    """`on_fast(precision, backend)` runs on each `fast` backend once measured (the parity of what deploys)."""
    for option, precision in plan:
        try:
            backend = backend_for(programs, option, precision, dev, cache)
        except Exception as e:  # noqa: BLE001 - a failing option is reported, the others go on
            results.add("speed", {"option": option, "precision": precision, "batch": None, "error": _error(e)})
            continue
        for b in args.batches:
            frames = np.random.default_rng(0).integers(0, 256, (b, args.h, args.w, 3), dtype=np.uint8)
            row = {"option": option, "precision": precision, "batch": b, "settings": backend.options.describe()}
            try:
                row.update(backend.warmup(b, args.h, args.w))
                row.update(measure(torch, backend, frames, dev, args.iters, args.warmup))
            except Exception as e:  # noqa: BLE001 - out of memory, compile failures...
                row["error"] = _error(e)
            results.add("speed", row)
            print(_speed_line(row), flush=True)
        if option == "fast" and on_fast is not None:
            on_fast(precision, backend)
        backend = None  # free the GPU memory before the next setting
        if dev == "cuda":
            torch.cuda.empty_cache()


def warm_start_row(programs: Programs, args, dev, results, cache: Path) -> None:
    """The first call of a compiled backend in a second process, from the compile cache the first one filled: the
    default (`fast`) on CUDA, `compile` on CPU. Skipped when neither was measured (the cache is empty)."""
    option = "fast" if dev == "cuda" else "compile"
    precision = "fp16" if dev == "cuda" else "fp32"
    if (option, precision) not in measurement_plan(args):
        return
    command = [sys.executable, __file__, "--first-call", str(programs.path(None)), "--device", dev,
               "--size", args.size, "--precisions", precision, "--options", option, "--cache-dir", str(cache)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    row = {"option": f"{option}, 2nd process", "precision": precision, "batch": 1,
           "process_s": time.perf_counter() - started}
    if done.returncode != 0:
        row["error"] = (done.stderr.strip().splitlines() or ["no output"])[-1][:400]
    else:
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    results.add("speed", row)
    print(_speed_line(row), flush=True)


def first_call(args) -> None:
    """--first-call PT2: print the first-call seconds at batch 1 of `--options`' first setting as JSON."""
    from jal_deploy.backends.torch_backend import TorchBackend
    text, _ = OPTIONS[args.options[0]]
    backend = TorchBackend(args.first_call, device=args.device, precision=args.precisions[0],
                           options=",".join(filter(None, [text, f"cache_dir={args.cache_dir}"])))
    print(json.dumps(backend.warmup(1, args.h, args.w)))


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:400]}"


def _speed_line(row: dict) -> str:
    head = f"{row['option']:17s} {row['precision']:5s} batch {row['batch']}"
    if "error" in row:
        return f"{head}: {row['error']}"
    if "backend_fps" not in row:
        return f"{head}: {seconds_text(row)}"
    return (f"{head}: backend {row['backend_fps']:.1f} FPS, stream {row['stream_fps']:.1f}, graph "
            f"{row['graph_fps']:.1f}, {row['ms_per_batch']:.2f} ms/batch ({seconds_text(row)})")


def parity_row(torch, backend, precision: str, reference: list, frames: np.ndarray, logits: dict, results) -> None:
    """Labels of the deployed path (the `fast` backend, frame by frame as a camera feeds it) against fp32 eager,
    and the same comparison on the logits of the eager network (`logit_parity`): a pixel whose class scores are
    near-tied flips under any rounding, so the label agreement alone would measure the weights' margins, not the
    precision's harm."""
    from jal_deploy.metrics import Agreement
    agreement = Agreement()
    for frame, ref in zip(frames, reference):
        agreement.update(backend(frame[None]), ref)
    row = {"precision": precision, "reference": "fp32", "path": backend.options.describe(),
           "argmax_agreement": agreement.percent, **logits.get(precision, {})}
    results.add("parity", row)
    print(f"{precision} vs fp32: argmax agreement {row['argmax_agreement']:.3f} %; {_tie_text(row)}", flush=True)


def parity_frames(args, video: Path) -> np.ndarray:
    """`--frames` (what jal-segment reads: a glob, folder, video or dataset tree; or `noise`), else the generated
    street video's first frames, resized to --size. Street frames, not noise: on noise a random R101's labels
    flip under any rounding (46 % of bf16 labels kept on CPU, against 97 % on target frames)."""
    import cv2

    from jal_deploy.sources import SourceError, open_source
    if args.frames == "noise":  # what the check used before: uniform noise frames
        return np.random.default_rng(1).integers(0, 256, (args.parity_frames, args.h, args.w, 3), dtype=np.uint8)
    try:
        source = open_source(args.frames or str(video), limit=args.parity_frames)
    except SourceError as e:
        raise SystemExit(f"--frames: {e}") from None
    try:
        images = [item.frame for item in source if item.error is None][:args.parity_frames]
    finally:
        source.close()
    if not images:
        raise SystemExit(f"--frames {args.frames or video}: no frame could be read")
    return np.stack([cv2.resize(im, (args.w, args.h), interpolation=cv2.INTER_AREA) for im in images])


def logit_parity(torch, net, frames: np.ndarray, dev: str, precisions: list[str]) -> dict[str, dict]:
    """fp32 against each precision's autocast on the eager deploy network's logits (fp32 computed once). The
    rounding's reach is twice the 99.9th percentile of the per-pixel largest logit error: a pixel whose fp32
    top-2 margin is below it can flip by rounding alone (`near_ties`, % of pixels), one above it should not
    (`decisive_agreement`)."""
    output = net.output
    net.output = "logits"
    try:
        net.to(dev)
        x = torch.from_numpy(frames).to(dev)
        with torch.inference_mode():
            ref = net(x).float()
            low = {}
            for precision in precisions:
                with torch.autocast(device_type=dev, dtype=torch.float16 if precision == "fp16" else torch.bfloat16):
                    low[precision] = net(x).float()
    finally:
        net.output = output
        net.to("cpu")
    top2 = ref.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).flatten()
    out = {}
    for precision, logits in low.items():
        reach = 2 * float(torch.quantile((logits - ref).abs().amax(1).flatten().double(), 0.999))
        decisive = margin >= reach
        agree = (logits.argmax(1) == ref.argmax(1)).flatten()
        out[precision] = {
            "rounding_reach": reach, "median_margin": float(margin.median()),
            "near_ties": 100 * float((~decisive).float().mean()),
            "decisive_agreement": 100 * float(agree[decisive].float().mean()) if bool(decisive.any()) else None}
    return out


def _tie_text(row: dict) -> str:
    if "near_ties" not in row:
        return "no logit comparison"
    decisive = row.get("decisive_agreement")
    return (f"{row['near_ties']:.1f} % of pixels have a top-2 margin below the rounding's reach "
            f"({row['rounding_reach']:.3g}; median margin {row['median_margin']:.3g}), the rest agree "
            + (f"{decisive:.3f} %" if decisive is not None else "(none)"))


def street_video(args, tmp: Path) -> Path:
    from jal_deploy.synth import generate_video
    return Path(generate_video(tmp / "street.mp4", seed=0, frames=max(args.video_frames, args.parity_frames),
                               size=(args.w, args.h), progress=False)["path"])


def end_to_end(path, args, dev, video: Path, tmp: Path, results, cache: Path) -> None:
    from jal_deploy.backends.torch_backend import TorchBackend
    from jal_deploy.job import run_job
    from jal_deploy.segmenter import Segmenter
    from jal_deploy.sources import open_source
    precision = "fp16" if dev == "cuda" else "fp32"
    seg = Segmenter(TorchBackend(path, device=dev, precision=precision, options=f"cache_dir={cache}"))
    # The first call pays one-off costs (compile, graph capture, the resize maps): timed apart from the clip,
    # which then measures the steady state a camera stream runs at.
    start = time.perf_counter()
    seg.predict(np.zeros((args.h, args.w, 3), np.uint8))
    first = time.perf_counter() - start
    s = run_job(seg, open_source(str(video)), tmp / "out", save=("video",), progress=False, log=lambda *_: None).stats
    row = {"precision": precision, "fps": s.fps, "inference_fps": s.inference_fps, "frames": s.frames,
           "ms_per_frame": s.to_dict()["ms_per_frame"], "first_call_s": first}
    results.add("end_to_end", row)
    print(f"end to end ({precision}, batch 1, {args.w}x{args.h} mp4v in, annotated mp4v out, after a first call "
          f"of {first:.2f} s): {s.fps:.1f} FPS; inference alone {s.inference_fps:.1f} FPS; ms/frame "
          f"{row['ms_per_frame']}", flush=True)


def random_deploy_net(arch: str, width: float, info, batches: int = 4):
    """The deploy graph of a network with random weights, its BatchNorm statistics estimated on random frames in
    the graph's own input form (uint8 BGR, normalised inside). A fresh network's statistics normalise nothing:
    R101's logits reach ~1e5, past fp16's range, and so do statistics estimated on unit-scale noise, since the
    graph's real input spans +-150 around the mean; the fp16/bf16 parity would then measure overflow, not
    rounding."""
    import torch

    from export.deploy import DeployNet
    from training.models import build_model
    from training.models.norm import estimate_statistics
    torch.manual_seed(0)  # the same random network on every run, so that parity numbers can be compared
    net = DeployNet(build_model(arch, num_classes=len(info.class_names), width=width).eval(), info.mean, info.std)
    noise = torch.Generator().manual_seed(0)
    estimate_statistics(net, (torch.randint(0, 256, (2, 128, 256, 3), generator=noise, dtype=torch.uint8)
                              for _ in range(batches)))
    return net


def deploy_net(args):
    """The network the check runs: a trained checkpoint's deploy graph (`--checkpoint`), or a random one of
    `--arch`/`--width` for speed alone."""
    from jal_deploy.labels import get_protocol
    from jal_deploy.modelinfo import ModelInfo
    if args.checkpoint:
        from export.deploy import DeployNet, model_info
        from training.checkpoints import load_trained
        model, meta = load_trained(args.checkpoint)
        info = model_info(model, meta, "uint8_bgr_nhwc", "labels", dynamic=True)
        info.input_size = [args.w, args.h]
        return DeployNet(model, info.mean, info.std), info
    proto = get_protocol("19")
    info = ModelInfo(arch=args.arch, class_names=list(proto.class_names), palette=proto.palette.tolist(),
                     input_size=[args.w, args.h], provenance={"weights": "random (speed benchmark)"})
    return random_deploy_net(args.arch, args.width, info), info


def measurement_plan(args) -> list[tuple[str, str]]:
    """PLAN restricted to --options and --precisions; on CPU, where fp16 autocast does not exist, fp32 stands in
    for it."""
    plan = []
    for option, precision in PLAN:
        if args.device != "cuda" and precision == "fp16":
            precision = "fp32"
        if option in args.options and precision in args.precisions and (option, precision) not in plan:
            plan.append((option, precision))
    return plan


def run(args) -> None:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch (pass --device cpu with a small arch to check the code path)")
    dev = args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    tmp = Path(tempfile.mkdtemp(prefix="jal-runtime-gpu-"))
    cache = tmp / "compile-cache"
    video = street_video(args, tmp)
    # a bad --frames stops the check here, before minutes of measuring
    frames = parity_frames(args, video) if args.checkpoint else None
    net, info = deploy_net(args)
    plan = measurement_plan(args)
    results = Results(args.json, f"{name}, torch {torch.__version__}, {info.arch} at {args.w}x{args.h}"
                      + (f", {Path(args.checkpoint).name}" if args.checkpoint else ", random weights"),
                      [[o, p, b] for o, p in plan for b in args.batches])
    # the targets are about R101 at 1024x512 on a GPU: elsewhere they are not checked
    results.data["targets"] = dev == "cuda" and info.arch == "deeplabv2-r101" and (args.w, args.h) == (1024, 512)
    programs = Programs(net, info, tmp)
    t = time.perf_counter()
    path = programs.path(None)
    print(f"{name}, torch {torch.__version__}; exported {info.arch} deploy graph "
          f"({sum(p.numel() for p in net.parameters()) / 1e6:.1f} M params) in {time.perf_counter() - t:.0f} s",
          flush=True)
    reduced = [p for p in args.precisions if p != "fp32"]
    parity_done: set = set()
    on_fast = None
    if frames is None:
        results.add("parity", {"error": "not measured: parity needs a trained network (--checkpoint); random "
                                        "weights are not accepted"})
    else:
        results.data["parity_planned"] = reduced
        try:
            reference = [r for r in backend_for(programs, "eager", "fp32", dev, cache).run_many(f[None] for f in frames)]
            logits = logit_parity(torch, net, frames, dev, reduced)
        except Exception as e:  # noqa: BLE001 - recorded as the section's row; the parts after it still run
            results.data["parity_planned"] = reduced = []
            results.add("parity", {"error": _error(e)})

        def on_fast(precision, backend):
            if precision in reduced and precision not in parity_done:
                parity_done.add(precision)
                try:
                    parity_row(torch, backend, precision, reference, frames, logits, results)
                except Exception as e:  # noqa: BLE001 - the speed rows after it still run
                    results.add("parity", {"precision": precision, "error": _error(e)})
    slow = [(o, p) for o, p in plan if o == "max_autotune"]
    speed_rows(torch, programs, args, dev, results, [r for r in plan if r not in slow], cache, on_fast)
    for precision in [p for p in reduced if p not in parity_done and on_fast is not None]:
        try:  # the `fast` rows were not measured for this precision: its parity still is
            on_fast(precision, backend_for(programs, "fast", precision, dev, cache))
        except Exception as e:  # noqa: BLE001
            results.add("parity", {"precision": precision, "error": _error(e)})
    for section, part in (("end_to_end", lambda: end_to_end(path, args, dev, video, tmp, results, cache)),
                          ("speed", lambda: warm_start_row(programs, args, dev, results, cache))):
        try:
            part()
        except Exception as e:  # noqa: BLE001 - recorded as the section's row; the parts after it still run
            results.add(section, {"error": _error(e)} if section == "end_to_end" else
                        {"option": "fast, 2nd process", "precision": "-", "batch": 1, "error": _error(e)})
            print(f"{section} failed: {_error(e)}", flush=True)
    speed_rows(torch, programs, args, dev, results, slow, cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="deeplabv2-r101")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (small for the CPU check)")
    ap.add_argument("--size", default="1024x512")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"], choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS),
                    help="torch backend settings to measure, in the order of PLAN (eager in fp32, fast in fp16 "
                         "and bf16, the others in fp16)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--video-frames", type=int, default=100)
    ap.add_argument("--device", default="cuda", help="cpu only checks the code path (use a small --arch/--size)")
    ap.add_argument("--checkpoint", help="a trained checkpoint (jal-train's, or one load_trained reads): the parity "
                    "runs on it only, and the speed too")
    ap.add_argument("--frames", help="parity on these frames (a glob, folder, video or dataset tree as jal-segment "
                    "reads them, resized to --size; 'noise' for uniform noise) instead of the generated street video's")
    ap.add_argument("--parity-frames", type=int, default=8, help="how many of --frames")
    ap.add_argument("--json", help="write the results here after every measurement")
    ap.add_argument("--summary", nargs=2, metavar=("TRAIN_LOG", "JSON"),
                    help="print the summary table of a train_speed.py log and a --json file, then exit")
    ap.add_argument("--first-call", metavar="PT2", help=argparse.SUPPRESS)  # the compile-cache probe's child
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.summary:
        print(summary(Path(args.summary[0]), Path(args.summary[1])))
        return
    args.w, args.h = (int(v) for v in args.size.split("x"))
    if args.first_call:
        first_call(args)
        return
    run(args)


if __name__ == "__main__":
    main()
