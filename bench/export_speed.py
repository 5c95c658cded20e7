#!/usr/bin/env python
"""CPU latency of the same deploy graph as torch eager, ONNX Runtime fp32 and ONNX Runtime int8 (Q/DQ).

Random-weight networks (speed does not depend on training), calibrated on synthetic street frames of the
same size. Prints median milliseconds per frame (batch 1) and the ratios, all measured in one run:
    python bench/export_speed.py                  # R18 at 512x256 and R101 at 1024x512
    python bench/export_speed.py --only deeplabv2-r18
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from export.deploy import DeployNet
from export.onnx_export import export_onnx
from export.precision import to_int8
from jal_deploy.datasets import find_samples, read_image
from jal_deploy.labels import get_protocol
from jal_deploy.machine import cpu_summary
from jal_deploy.metrics import Agreement
from jal_deploy.modelinfo import ModelInfo
from jal_deploy.synth import generate
from training.models import build_model

CONFIGS = (("deeplabv2-r18", 512, 256), ("deeplabv2-r101", 1024, 512))


def median_ms(fn, frame, repeats: int) -> float:
    fn(frame)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=[c[0] for c in CONFIGS])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--calib", type=int, default=8, help="calibration frames for int8")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for arch, w, h in CONFIGS:
        if args.only and arch != args.only:
            continue
        work = Path(tempfile.mkdtemp(prefix="jal-speed-"))
        generate(work / "data", seed=0, counts={"gta5": 0, "synthia": 0, "cs_train": args.calib + 1, "cs_val": 0},
                 size=(w, h), progress=False)
        frames = [read_image(s.image)[None] for s in
                  find_samples(work / "data/cityscapes", "cityscapes", split="train", require_labels=False)]
        model = build_model(arch, 19, wtm="high").eval()
        proto = get_protocol("19")
        info = ModelInfo(arch=arch, class_names=list(proto.class_names), palette=proto.palette.tolist(),
                         input_size=[w, h], dynamic=False)
        net = DeployNet(model, info.mean, info.std)
        fp32 = export_onnx(net, info, work / "fp32.onnx")
        int8 = to_int8(fp32, work / "int8.onnx", info, frames[: args.calib])
        frame = frames[-1]
        s32 = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
        s8 = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            eager = median_ms(lambda f: net(torch.from_numpy(f)), frame, args.repeats)
        ms32 = median_ms(lambda f: s32.run(None, {"image": f}), frame, args.repeats)
        ms8 = median_ms(lambda f: s8.run(None, {"image": f}), frame, args.repeats)
        agree = Agreement().update(s8.run(None, {"image": frame})[0], s32.run(None, {"image": frame})[0]).percent
        rows.append((arch, f"{w}x{h}", eager, ms32, ms8, agree))
    print(f"\nCPU: {cpu_summary()}; {torch.get_num_threads()} torch threads; ONNX Runtime {ort.__version__}, CPU provider; batch 1; "
          f"median of {args.repeats}; random weights")
    print(f"{'arch':15s} {'size':9s} {'eager ms':>9s} {'ort fp32':>9s} {'ort int8':>9s} {'fp32/int8':>9s} "
          f"{'eager/fp32':>10s} {'int8 agree':>10s}")
    for arch, size, eager, ms32, ms8, agree in rows:
        print(f"{arch:15s} {size:9s} {eager:9.1f} {ms32:9.1f} {ms8:9.1f} {ms32 / ms8:9.2f} {eager / ms32:10.2f} "
              f"{agree:9.2f}%")


if __name__ == "__main__":
    main()
