"""Which CPU a number was measured on: int8 kernels round differently, and speed ratios differ, between AVX2,
AVX-512, AVX-512 VNNI and AMX machines, so every benchmark prints this line next to its numbers. Native bf16
arithmetic (AVX-512 BF16 or AMX-BF16) decides whether bf16 autocast speeds CPU training up."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that change ONNX Runtime's and PyTorch's CPU kernels, as /proc/cpuinfo names them.
ISA_FLAGS = {"AVX2": ("avx2",), "AVX-512F": ("avx512f",), "AVX-512 VNNI": ("avx512_vnni",),
             "AVX-VNNI": ("avx_vnni",), "AMX": ("amx_tile", "amx_int8"), "AVX-512 BF16": ("avx512_bf16",),
             "AMX-BF16": ("amx_bf16",)}


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


def native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX-BF16): there `run.amp=bf16` trains faster;
    elsewhere bf16 is emulated and not measured to help. None where the instruction sets are unknown."""
    isa = cpu_info(cpuinfo)["isa"]
    if isa["AVX2"] is None:
        return None
    return bool(isa["AVX-512 BF16"] or isa["AMX-BF16"])


def emulated_bf16(amp: str, device_type: str, cpuinfo: str | None = None) -> str | None:
    """A warning for bf16 autocast on a CPU that only emulates bf16 (None where it is native, unknown, or unused):
    there it does not save time but multiplies it."""
    if amp != "bf16" or device_type != "cpu" or native_bf16(cpuinfo) is not False:
        return None
    return ("run.amp=bf16 on a CPU without native bf16 (no AVX-512 BF16 or AMX-BF16): torch emulates it, measured "
            "21-25x slower than run.amp=none on an AVX2-only AMD EPYC; use run.amp=none here")
