"""The torch backend's speed options as one record, with the fast path as the default on CUDA.

Each option is measured on its own by bench/runtime_gpu.py; CPU keeps plain eager execution unless asked, since
CUDA graphs, pinned memory and copy streams do not exist there and torch.compile costs seconds per input shape.
The record is plain Python (no torch import), so `jal_deploy` can parse it before a backend is opened. Users of
`jal-segment` set it through the environment variable JAL_TORCH_OPTIONS, e.g.
`JAL_TORCH_OPTIONS="compile=max-autotune,graphs=off"`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

ENV = "JAL_TORCH_OPTIONS"
CACHE_ENV = "JAL_COMPILE_CACHE"
# What torch.compile is asked for -> inductor's mode. CUDA graphs are this backend's own option (one graph per
# input shape, captured around the compiled code), so inductor's own CUDA graphs (cudagraph trees) stay off:
# a graph cannot be captured around code that captures graphs itself.
COMPILE_MODES = {"default": "default", "max-autotune": "max-autotune-no-cudagraphs"}
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no", "none")


class OptionsError(ValueError):
    """An option string that cannot be read; the message names the option and what it accepts."""


@dataclasses.dataclass(frozen=True)
class TorchOptions:
    """compile: None (eager), 'default' or 'max-autotune' (inductor tunes its kernels: minutes per input shape
    on R101, once per machine with the compile cache). freeze: inductor folds the weights into the compiled graph
    as constants (and autocast's weight casts with them). graphs: one CUDA graph per (batch, height, width) met,
    replayed (one launch instead of hundreds, what batch 1 is bound by); at most `max_shapes` shapes get a graph
    (and a compiled variant), others run as they are. channels_last: NHWC weights, cuDNN's tensor-core layout.
    pinned: frames staged in pinned host buffers and copied with non_blocking on side streams, so that the upload
    of batch k+1 overlaps the compute of batch k (`TorchBackend.run_many`). cache_dir: where compiled kernels and
    autotuning results persist between runs (None: the default under the user's cache folder)."""

    compile: str | None = None
    freeze: bool = False
    graphs: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False
    pinned: bool = False
    max_shapes: int = 8
    cache_dir: str | None = None

    @classmethod
    def for_device(cls, device: str) -> "TorchOptions":
        """The default on `device`: every option on for CUDA, eager as before on CPU."""
        if device == "cuda":
            return cls(compile="default", freeze=True, graphs=True, channels_last=True, cudnn_benchmark=True,
                       pinned=True)
        return cls()

    @classmethod
    def parse(cls, text: str | None, device: str) -> "TorchOptions":
        """`key=value` pairs separated by commas over the device's default; `eager` turns every option off."""
        options = cls.for_device(device)
        for item in (text or "").replace(" ", "").split(","):
            if not item:
                continue
            if item == "eager":
                options = cls(cache_dir=options.cache_dir)
                continue
            key, sep, value = item.partition("=")
            key = ALIASES.get(key, key)
            if not sep or key not in FIELDS:
                raise OptionsError(f"{ENV}: cannot read {item!r}; expected key=value with key one of "
                                   f"{', '.join(sorted(FIELDS))} (or 'eager')")
            options = dataclasses.replace(options, **{key: _value(key, value)})
            if key == "compile" and options.compile is None:
                options = dataclasses.replace(options, freeze=False)  # nothing to freeze into: off with it
        return options.validate()

    @classmethod
    def from_env(cls, device: str) -> "TorchOptions":
        return cls.parse(os.environ.get(ENV), device)

    def validate(self) -> "TorchOptions":
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise OptionsError(f"compile={self.compile}: choose one of {', '.join(COMPILE_MODES)} or off")
        if self.max_shapes < 1:
            raise OptionsError(f"max_shapes={self.max_shapes}: at least 1")
        if self.freeze and self.compile is None:
            raise OptionsError("freeze=on folds weights into a compiled graph: it needs compile=default or "
                               "compile=max-autotune")
        return self

    def on_cpu(self) -> list[str]:
        """The options that only exist on CUDA, by name, when they are asked for on CPU."""
        return [name for name in ("graphs", "pinned", "cudnn_benchmark") if getattr(self, name)]

    def inductor_options(self) -> dict:
        """torch.compile's `options` (it takes a mode or options, not both): the mode's settings plus freezing."""
        from torch._inductor import list_mode_options
        return {**list_mode_options(COMPILE_MODES[self.compile]), "freezing": self.freeze}

    def describe(self) -> str:
        parts = [f"compile {self.compile}" + (" + freezing" if self.freeze else "")] if self.compile else ["eager"]
        parts += [name.replace("_", "-") for name in ("graphs", "channels_last", "pinned") if getattr(self, name)]
        return ", ".join(parts)


FIELDS = {f.name: f.type for f in dataclasses.fields(TorchOptions)}
ALIASES = {"cuda_graphs": "graphs", "freezing": "freeze", "cudnn": "cudnn_benchmark", "cache": "cache_dir"}


def _value(key: str, text: str):
    if key == "compile":
        return None if text.lower() in _FALSE else text
    if key == "cache_dir":
        return text or None
    if key == "max_shapes":
        try:
            return int(text)
        except ValueError:
            raise OptionsError(f"{ENV}: max_shapes={text!r} is not a whole number") from None
    lowered = text.lower()
    if lowered not in _TRUE + _FALSE:
        raise OptionsError(f"{ENV}: {key}={text!r}: use on or off")
    return lowered in _TRUE


def compile_cache_dir(options: TorchOptions) -> Path:
    """The compile cache: the option, else $JAL_COMPILE_CACHE, else ~/.cache/jal-deploy/torch-compile (torch's
    own default lies in /tmp, which a reboot empties, and R101's max-autotune takes minutes to redo)."""
    if options.cache_dir:
        return Path(options.cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jal-deploy" / "torch-compile"


def use_compile_cache(options: TorchOptions) -> Path:
    """Point inductor's on-disk caches (compiled graphs, kernels, autotuning, Triton's cache below them) at the
    compile cache. An explicit `cache_dir` always wins; otherwise a TORCHINDUCTOR_CACHE_DIR set already (by the
    user, or by inductor itself once it has run in this process) is kept. Returns the folder in use."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current and not options.cache_dir:
        return Path(current)
    folder = compile_cache_dir(options)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder
