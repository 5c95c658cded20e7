"""Which CPU a number was measured on: int8 kernels round differently, and speed ratios differ, between AVX2,
AVX-512, AVX-512 VNNI and AMX machines, so every benchmark prints this line next to its numbers."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that change ONNX Runtime's and PyTorch's CPU kernels, as /proc/cpuinfo names them.
ISA_FLAGS = {"AVX2": ("avx2",), "AVX-512F": ("avx512f",), "AVX-512 VNNI": ("avx512_vnni",),
             "AVX-VNNI": ("avx_vnni",), "AMX": ("amx_tile", "amx_int8")}


def cpu_info(cpuinfo: str | None = None) -> dict:
    """{'model': ..., 'cores': N, 'isa': {'AVX2': True, ...}} from /proc/cpuinfo (Linux); elsewhere the model
    comes from `platform` and the instruction sets are unknown (None)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor speaks for all
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    isa = {name: (all(f in flags for f in needed) if flags else None) for name, needed in ISA_FLAGS.items()}
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    return {"model": model, "cores": os.cpu_count(), "isa": isa}


def cpu_summary(cpuinfo: str | None = None) -> str:
    """'AMD EPYC, 2 cores: AVX2, AVX-512F, AVX-512 VNNI, AVX-VNNI; no AMX' (one line for benchmark output)."""
    info = cpu_info(cpuinfo)
    has = [k for k, v in info["isa"].items() if v]
    lacks = [k for k, v in info["isa"].items() if v is False]
    if not has and not lacks:
        return f"{info['model']}, {info['cores']} cores (instruction sets unknown)"
    return f"{info['model']}, {info['cores']} cores: {', '.join(has) or 'none of ' + '/'.join(ISA_FLAGS)}" + \
        (f"; no {', '.join(lacks)}" if lacks and has else "")
