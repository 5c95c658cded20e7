"""ONNX Runtime backend: TensorRT / CUDA / CPU execution providers, verified after the session exists.

onnxruntime-gpu lists CUDA and TensorRT as available even without a GPU and then runs on CPU without
raising, so the provider list of the created session is what counts: an explicit `cuda`/`tensorrt` request
that ends on CPU is an error; `auto` falls back and says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jal_deploy.modelinfo import ModelInfo, ModelInfoError

from .base import Backend, BackendError, InputRange, MIN_SIDE, default_profile, tensor_shape

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
CHAINS = {"cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TRT, CUDA, CPU]}
DEVICE_OF = {CPU: "cpu", CUDA: "cuda", TRT: "tensorrt"}
GPU_HINT = ("install the GPU build: pip uninstall onnxruntime && pip install 'jal-deploy[gpu]' "
            "(and a CUDA/cuDNN matching onnxruntime-gpu)")
TRT_HINT = ("TensorRT's libraries (libnvinfer, libnvonnxparser) were not found or failed to load: install the "
            "TensorRT version your onnxruntime-gpu was built against (pip install 'jal-deploy[trt-cu12]' or "
            "[trt-cu13]) and put its lib folder on LD_LIBRARY_PATH")


def tensorrt_options(model: str | Path, info: ModelInfo) -> dict:
    """TensorRT execution provider options: the engine and timing caches next to the model (so the engine is
    built once, not in every process), one optimisation profile (the range jal-export uses for engines)
    and fp16 kernels where the artefact is fp16."""
    model = Path(model)
    cache = model.parent / f"{model.stem}.ort-trt-cache"
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
               "trt_fp16_enable": info.precision == "fp16"}
    for key, bhw in zip(("min", "opt", "max"), default_profile(info)):
        options[f"trt_profile_{key}_shapes"] = f"{info.input_name}:" + "x".join(map(str, tensor_shape(info, bhw)))
    return options


def fallback_message(wanted: str, active: str) -> str:
    """Why a session did not get the provider it asked for: TensorRT's libraries for the TensorRT EP,
    CUDA/cuDNN for the CUDA EP."""
    why = ("TensorRT libraries missing or no usable GPU" if wanted == TRT
           else "no usable GPU, or CUDA/cuDNN libraries missing")
    return f"asked ONNX Runtime for {wanted} but the session runs on {active} ({why})"


def _read_info(path: Path) -> ModelInfo:
    """ModelInfo from the file's metadata before the TensorRT EP session exists (its options need it),
    read through a CPU session: a runtime-only install has no `onnx` package."""
    import onnxruntime as ort
    props = ort.InferenceSession(str(path), providers=[CPU]).get_modelmeta().custom_metadata_map
    try:
        return ModelInfo.from_onnx_metadata(props)
    except ModelInfoError as e:
        raise BackendError(f"{path}: {e}") from None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 io_binding: bool | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("ONNX Runtime is not installed: pip install 'jal-deploy[cpu]' "
                               "(or 'jal-deploy[gpu]' on an NVIDIA machine)") from None
        self.path = Path(path)
        available = ort.get_available_providers()
        wanted = device
        if device == "auto":  # TensorRT EP only on request: it compiles engines for minutes on first use
            wanted = "cuda" if CUDA in available else "cpu"
        chain = [p for p in CHAINS[wanted] if p in available]
        if CHAINS[wanted][0] not in available:
            raise BackendError(f"ONNX Runtime {ort.__version__} here has no {CHAINS[wanted][0]} "
                               f"(available: {', '.join(available)}): {GPU_HINT}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # a provider fallback is reported by us, below
        if threads:
            options.intra_op_num_threads = threads
        # Idle ORT threads spin by default, taking the cores the decode/encode threads of the pipeline need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            providers = [(p, self._trt_options()) if p == TRT else p for p in chain]
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except BackendError:
            raise
        except Exception as e:  # InvalidProtobuf, NoSuchFile, Fail...: onnxruntime has no common base class
            raise BackendError(f"ONNX Runtime cannot load {self.path}: {str(e).strip()[:400]}") from None
        active = self.session.get_providers()
        self.device = DEVICE_OF.get(active[0], active[0])
        if active[0] != chain[0]:
            message = fallback_message(chain[0], active[0])
            if device != "auto":
                raise BackendError(f"{message}: {TRT_HINT if chain[0] == TRT else GPU_HINT}")
            self.notes.append(message)
        try:
            self.info = ModelInfo.from_onnx_metadata(self.session.get_modelmeta().custom_metadata_map)
        except ModelInfoError as e:
            raise BackendError(f"{self.path}: {e}") from None
        if active[0] == TRT:  # inputs outside the engine's profile would make the provider rebuild or fail
            self.accepts = InputRange.from_profile(*default_profile(self.info))
        elif self.info.dynamic:  # ONNX declares no upper bounds; the Segmenter keeps sides >= 32
            self.accepts = InputRange((1, None), (MIN_SIDE, None), (MIN_SIDE, None))
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [self.info.input_name]:
            raise BackendError(f"{self.path} has inputs {[i.name for i in inputs]} but its metadata names "
                               f"{self.info.input_name!r}: the file was modified after export")
        self.output_name = self.session.get_outputs()[0].name
        # IO binding on GPUs: the output is allocated once on the device and copied back in one transfer.
        self.io_binding = self.device != "cpu" if io_binding is None else io_binding
        self._device_name = "cuda" if self.device != "cpu" else "cpu"

    def _trt_options(self) -> dict:
        """TensorRT EP options; without a writable cache folder next to the model, no caches (and a note)."""
        options = tensorrt_options(self.path, _read_info(self.path))
        try:
            Path(options["trt_engine_cache_path"]).mkdir(exist_ok=True)
        except OSError as e:
            self.notes.append(f"no TensorRT engine cache ({e.strerror}): the engine is rebuilt in every process")
            for key in ("trt_engine_cache_enable", "trt_timing_cache_enable"):
                options[key] = False
        return options

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        try:
            if self.io_binding:
                binding = self.session.io_binding()
                binding.bind_cpu_input(self.info.input_name, batch)
                binding.bind_output(self.output_name, self._device_name)
                self.session.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()[0]
            return self.session.run([self.output_name], {self.info.input_name: batch})[0]
        except Exception as e:
            if type(e).__name__ in ("InvalidArgument", "Fail", "RuntimeException"):
                raise self.shape_error(batch, e) from None
            raise

    def describe(self) -> str:
        providers = ", ".join(self.session.get_providers()) if self.session is not None else "closed"
        return f"onnxruntime on {self.device} ({providers}; {self.info.precision})"

    def close(self) -> None:
        self.session = None
