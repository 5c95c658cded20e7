#!/usr/bin/env python
"""The runtime on a GPU: the R101 deploy graph (Enc + folded Dec2^T + upsample + argmax, uint8 frames in,
labels out) exported with torch.export and run through jal_deploy's torch backend, fp32 and fp16/bf16
autocast, batch 1 and 8 at 1024x512; the fp16/bf16 labels and logits against fp32 on the same street
frames; `jal-segment`'s pipeline end to end on a generated street video; then the torch backend's speed options
one at a time (eager, channels-last, + cuDNN benchmark = the default, + CUDA graphs, + torch.compile), fp16.

Two numbers per setting: `backend` FPS includes the host->device copy of the frames and the device->host
copy of the labels (what an application sees); `graph` FPS runs the module on frames already on the GPU.
Random weights, their BatchNorm statistics estimated on noise so that activations stay in a trained network's
range: speed does not depend on them; parity does, and `--checkpoint` runs everything on a trained network.
Needs torch, OpenCV and this source tree only (no ONNX tools, no TensorRT). Results go to --json after every measurement, so a time limit loses only the rest;
`--summary TRAIN_LOG JSON` prints the one table bench/gpu_check.sh ends with.

    python bench/runtime_gpu.py                  # on a CUDA machine, from the repository root
    python bench/runtime_gpu.py --device cpu --arch deeplabv2-r18 --width 0.125 --size 128x64 --iters 2
    python bench/runtime_gpu.py --checkpoint runs/r101/checkpoints/last.pth --frames '/data/cityscapes/leftImg8bit/val/frankfurt/*.png'
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from jal_deploy.atomic import write_text

# Torch backend options measured one by one: name -> TorchBackend keyword arguments.
OPTIONS = {
    "eager": {"channels_last": False, "cudnn_benchmark": False},
    "channels_last": {"channels_last": True, "cudnn_benchmark": False},
    "default": {},  # channels-last + cuDNN benchmark: what jal-segment uses
    "cuda_graphs": {"cuda_graphs": True},
    "compile": {"compile_mode": "default"},  # max-autotune tunes convs for many minutes on R101
}
# Options measured at batch 1 only: torch.compile (dynamic=False) compiles R101 again for every batch size,
# minutes each, inside the runtime part's time limit.
BATCH_ONE_ONLY = {"compile"}


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

    def __init__(self, path: str | None, device: str):
        self.path, self.data = path, {"device": device, "speed": [], "parity": [], "end_to_end": None}

    def add(self, section: str, row) -> None:
        if isinstance(self.data[section], list):
            self.data[section].append(row)
        else:
            self.data[section] = row
        if self.path:  # atomic: a time limit that kills the process mid-write leaves the previous file
            write_text(self.path, json.dumps(self.data, indent=2))


def measure(torch, backend, frames: np.ndarray, dev: str, iters: int, warmup: int) -> dict:
    b = len(frames)
    on_device = torch.from_numpy(frames).to(dev)
    seconds = timed(torch, lambda: backend(frames), iters, warmup)
    with torch.inference_mode(), backend._autocast():
        run = backend._replay if backend.graphs is not None else backend.module
        graph = timed(torch, lambda: run(on_device), iters, warmup)
    return {"backend_fps": b * iters / seconds, "graph_fps": b * iters / graph, "ms_per_batch": 1000 * seconds / iters}


def speed_rows(torch, path, args, dev, results, precisions, options) -> None:
    from jal_deploy.backends.torch_backend import TorchBackend
    w, h = args.w, args.h
    for option in options:
        for precision in precisions:
            try:
                backend = TorchBackend(path, device=dev, precision=precision, **OPTIONS[option])
            except Exception as e:  # noqa: BLE001 - a failing option is reported, the others go on
                results.add("speed", {"option": option, "precision": precision, "batch": None, "error": _error(e)})
                continue
            if option in BATCH_ONE_ONLY:
                print(f"{option} {precision}: compiling for batch 1 (minutes, not timed)...", flush=True)
            for b in ([1] if option in BATCH_ONE_ONLY else args.batches):
                frames = np.random.default_rng(0).integers(0, 256, (b, h, w, 3), dtype=np.uint8)
                row = {"option": option, "precision": precision, "batch": b}
                try:
                    row.update(measure(torch, backend, frames, dev, args.iters, args.warmup))
                except Exception as e:  # noqa: BLE001 - out of memory, compile failures...
                    row["error"] = _error(e)
                results.add("speed", row)
                print(_speed_line(row), flush=True)
            backend = None  # free the GPU memory before the next setting
            if dev == "cuda":
                torch.cuda.empty_cache()


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:400]}"


def _speed_line(row: dict) -> str:
    head = f"{row['option']:13s} {row['precision']:5s} batch {row['batch']}"
    if "error" in row:
        return f"{head}: {row['error']}"
    return (f"{head}: backend {row['backend_fps']:.1f} FPS, graph {row['graph_fps']:.1f} FPS, "
            f"{row['ms_per_batch']:.2f} ms/batch")


def parity_rows(torch, path, dev, results, precisions, net, frames: np.ndarray) -> None:
    """Labels of each reduced precision against fp32 on the same street frames, through the exported program
    (what the runtime deploys), and the same comparison on the logits of the eager network (`logit_parity`): a
    pixel whose class scores are near-tied flips under any rounding, so the label agreement alone would measure
    the weights' margins, not the precision's harm."""
    from jal_deploy.backends.torch_backend import TorchBackend
    from jal_deploy.metrics import Agreement
    reference = TorchBackend(path, device=dev, precision="fp32")(frames)
    reduced = [p for p in precisions if p != "fp32"]
    logits = logit_parity(torch, net, frames, dev, reduced)
    for precision in reduced:
        labels = TorchBackend(path, device=dev, precision=precision)(frames)
        row = {"precision": precision, "reference": "fp32",
               "argmax_agreement": Agreement().update(labels, reference).percent, **logits[precision]}
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
    decisive = row.get("decisive_agreement")
    return (f"{row['near_ties']:.1f} % of pixels have a top-2 margin below the rounding's reach "
            f"({row['rounding_reach']:.3g}; median margin {row['median_margin']:.3g}), the rest agree "
            + (f"{decisive:.3f} %" if decisive is not None else "(none)"))


def street_video(args, tmp: Path) -> Path:
    from jal_deploy.synth import generate_video
    return Path(generate_video(tmp / "street.mp4", seed=0, frames=max(args.video_frames, args.parity_frames),
                               size=(args.w, args.h), progress=False)["path"])


def end_to_end(path, args, dev, video: Path, tmp: Path, results) -> None:
    from jal_deploy.backends.torch_backend import TorchBackend
    from jal_deploy.job import run_job
    from jal_deploy.segmenter import Segmenter
    from jal_deploy.sources import open_source
    precision = "fp16" if dev == "cuda" else "fp32"
    seg = Segmenter(TorchBackend(path, device=dev, precision=precision))
    # The first call pays one-off costs (cuDNN's algorithm search, the resize maps): timed apart from the clip,
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


def run(args) -> None:
    import torch

    from export.torch_program import export_program

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch (pass --device cpu with a small arch to check the code path)")
    dev = args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    tmp = Path(tempfile.mkdtemp(prefix="jal-runtime-gpu-"))
    video = street_video(args, tmp)
    frames = parity_frames(args, video)  # a bad --frames stops the check here, before minutes of measuring
    net, info = deploy_net(args)
    results = Results(args.json, f"{name}, torch {torch.__version__}, {info.arch} at {args.w}x{args.h}"
                      + (f", {Path(args.checkpoint).name}" if args.checkpoint else ", random weights"))
    t = time.perf_counter()
    path = export_program(net, info, tmp / "deploy.pt2")
    print(f"{name}, torch {torch.__version__}; exported {info.arch} deploy graph "
          f"({sum(p.numel() for p in net.parameters()) / 1e6:.1f} M params) in {time.perf_counter() - t:.0f} s",
          flush=True)
    speed_rows(torch, path, args, dev, results, args.precisions, ["default"])
    for section, part in (("parity", lambda: parity_rows(torch, path, dev, results, args.precisions, net, frames)),
                          ("end_to_end", lambda: end_to_end(path, args, dev, video, tmp, results))):
        try:
            part()
        except Exception as e:  # noqa: BLE001 - recorded as the section's row; the parts after it still run
            results.add(section, {"error": _error(e)})
            print(f"{section} failed: {_error(e)}", flush=True)
    extra = [o for o in args.options if o != "default"]
    if extra:
        speed_rows(torch, path, args, dev, results, ["fp16" if dev == "cuda" else "fp32"], extra)


# -- the one summary table ---------------------------------------------------------------------------------------
TRAIN_ROW = re.compile(r"^(none|fp16|bf16)\s+([\d.]+)\s+([\d.]+)\s+(\S+)\s*$")


def train_rows(log: Path) -> list[dict]:
    """The `amp it/s s/it peak GiB` rows bench/train_speed.py prints."""
    rows = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        found = TRAIN_ROW.match(line.strip())
        if found:
            rows.append({"amp": found[1], "it_s": float(found[2]), "peak_gib": found[4]})
    return rows


def summary(train_log: Path, runtime_json: Path) -> str:
    try:
        data = json.loads(runtime_json.read_text()) if runtime_json.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    rows = [("training JAL+WTM", f"{'fp32' if r['amp'] == 'none' else r['amp']}",
             f"{r['it_s']:.2f} it/s, peak {r['peak_gib']} GiB") for r in train_rows(train_log)]
    rows = rows or [("training JAL+WTM", "-", "not measured (see its log above)")]
    for r in data.get("speed", []):
        setting = f"{r['precision']} batch {r['batch']} [{r['option']}]"
        value = r.get("error") or f"{r['backend_fps']:.1f} FPS ({r['graph_fps']:.1f} graph only)"
        rows.append(("deploy graph, torch backend", setting, value))
    e2e = data.get("end_to_end")
    if e2e and "error" in e2e:
        rows.append(("jal-segment end to end", "-", e2e["error"]))
    else:
        first = f", first call {e2e['first_call_s']:.2f} s" if e2e and "first_call_s" in e2e else ""
        rows.append(("jal-segment end to end", f"{e2e['precision']} batch 1" if e2e else "-",
                     f"{e2e['fps']:.1f} FPS (inference {e2e['inference_fps']:.1f}{first})" if e2e else "not measured"))
    for r in data.get("parity", []):
        rows.append(("parity on this device", "-", r["error"]) if "error" in r else
                    ("parity on this device", f"{r['precision']} vs {r['reference']}",
                     f"argmax agreement {r['argmax_agreement']:.3f} %"
                     + (f"; {r['near_ties']:.1f} % near-ties, decisive pixels {r['decisive_agreement']:.3f} %"
                        if r.get("decisive_agreement") is not None else "")))
    if not data.get("parity"):
        rows.append(("parity on this device", "-", "not measured"))
    widths = [max(len(r[i]) for r in rows + [("part", "setting", "result")]) for i in range(3)]
    line = "| " + " | ".join(f"{{:{w}s}}" for w in widths) + " |"
    out = [f"GPU check summary: {data.get('device', 'device unknown')}", line.format("part", "setting", "result"),
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line.format(*r) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="deeplabv2-r101")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (small for the CPU check)")
    ap.add_argument("--size", default="1024x512")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS),
                    help="torch backend options to measure (fp16); 'default' is measured for every precision")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--video-frames", type=int, default=100)
    ap.add_argument("--device", default="cuda", help="cpu only checks the code path (use a small --arch/--size)")
    ap.add_argument("--checkpoint", help="a trained checkpoint (jal-train's, or one load_trained reads) instead of "
                    "random weights: its parity is the one a deployment sees")
    ap.add_argument("--frames", help="parity on these frames (a glob, folder, video or dataset tree as jal-segment "
                    "reads them, resized to --size; 'noise' for uniform noise) instead of the generated street video's")
    ap.add_argument("--parity-frames", type=int, default=8, help="how many of --frames")
    ap.add_argument("--json", help="write the results here after every measurement")
    ap.add_argument("--summary", nargs=2, metavar=("TRAIN_LOG", "JSON"),
                    help="print the summary table of a train_speed.py log and a --json file, then exit")
    args = ap.parse_args()
    if args.summary:
        print(summary(Path(args.summary[0]), Path(args.summary[1])))
        return
    args.w, args.h = (int(v) for v in args.size.split("x"))
    run(args)


if __name__ == "__main__":
    main()
