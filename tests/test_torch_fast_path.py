"""The torch backend's fast path, as far as it runs on CPU: the options record, the per-shape cache, the
one-ahead batch stream, torch.compile against eager, and the compile cache a second process starts from."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jal_deploy.backends import BackendError
from jal_deploy.backends.torch_backend import TorchBackend
from jal_deploy.backends.torch_cuda import Pending, ShapeCache
from jal_deploy.backends.torch_options import OptionsError, TorchOptions, compile_cache_dir, use_compile_cache
from jal_deploy.labels import get_protocol
from jal_deploy.modelinfo import ModelInfo

ROOT = Path(__file__).parents[1]


class TinyNet(torch.nn.Module):
    """Two convolutions to 19 class scores at a quarter of the size, upsampled, argmax: the deploy graph's shape
    at a cost that keeps CPU compiles at seconds."""

    input_format = "uint8_bgr_nhwc"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.b = torch.nn.Conv2d(8, 19, 3, padding=1)

    def forward(self, image):
        x = image.float().permute(0, 3, 1, 2) / 255.0
        scores = self.b(torch.relu(self.a(x)))
        up = torch.nn.functional.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return up.argmax(1).to(torch.uint8)


@pytest.fixture(scope="module")
def tiny_program(tmp_path_factory):
    from export.torch_program import export_program
    proto = get_protocol("19")
    info = ModelInfo(arch="tiny", class_names=list(proto.class_names), palette=proto.palette.tolist(),
                     input_size=[64, 32])
    return export_program(TinyNet().eval(), info, tmp_path_factory.mktemp("tiny") / "tiny.pt2")


def frames(batch, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


def test_defaults_are_the_fast_path_on_cuda_and_eager_on_cpu():
    cuda = TorchOptions.for_device("cuda")
    assert cuda.compile == "default" and cuda.freeze and cuda.graphs and cuda.channels_last and cuda.pinned
    assert TorchOptions.for_device("cpu") == TorchOptions()
    assert TorchOptions.parse("", "cuda") == cuda


def test_option_text_overrides_the_device_default_and_errors_name_the_fix():
    opts = TorchOptions.parse("compile=max-autotune, cuda_graphs=off,max_shapes=3", "cuda")
    assert (opts.compile, opts.freeze, opts.graphs, opts.max_shapes, opts.pinned) == ("max-autotune", True, False, 3,
                                                                                      True)
    assert opts.inductor_options()["max_autotune"] and "triton.cudagraphs" not in opts.inductor_options()
    assert TorchOptions.parse("eager", "cuda") == TorchOptions()
    assert TorchOptions.parse("compile=default", "cpu").compile == "default"
    for text, hint in (("compile=fast", "max-autotune"), ("graphs=maybe", "on or off"), ("speed=1", "compile"),
                       ("graphs", "key=value"), ("compile=off,freeze=on", "freeze=on"), ("max_shapes=0", "at least 1")):
        with pytest.raises(OptionsError, match=hint):
            TorchOptions.parse(text, "cuda")
    off = TorchOptions.parse("compile=off", "cuda")
    assert off.compile is None and not off.freeze and off.graphs


def test_compile_cache_folder_and_inductor_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("JAL_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache_dir(TorchOptions()) == tmp_path / "xdg" / "jal-deploy" / "torch-compile"
    monkeypatch.setenv("JAL_COMPILE_CACHE", str(tmp_path / "env"))
    assert compile_cache_dir(TorchOptions()) == tmp_path / "env"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "user"))
    assert use_compile_cache(TorchOptions()) == tmp_path / "user"  # the user's own setting is kept
    assert use_compile_cache(TorchOptions(cache_dir=str(tmp_path / "asked"))) == tmp_path / "asked"  # unless asked
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "asked") and (tmp_path / "asked").is_dir()


def test_shape_cache_builds_once_per_key_and_stops_at_its_limit():
    built = []
    cache = ShapeCache(lambda key, example: built.append((key, example)) or f"graph {key}", limit=2)
    assert cache.get((1, 64, 128), "x") == "graph (1, 64, 128)"
    assert cache.get((1, 64, 128), "y") == "graph (1, 64, 128)"  # hit: not built again
    assert cache.get((8, 64, 128), "z") == "graph (8, 64, 128)"
    assert cache.get((1, 32, 64), "w") is None and (1, 32, 64) in cache.refused  # past the limit: runs without
    assert built == [((1, 64, 128), "x"), ((8, 64, 128), "z")]
    assert (8, 64, 128) in cache and (1, 32, 64) not in cache


def test_pending_result_is_waited_for_once_and_kept():
    class Event:
        waits = 0

        def synchronize(self):
            Event.waits += 1
    host = torch.arange(4, dtype=torch.uint8)
    pending = Pending(event=Event(), host=host)
    first = pending.result()
    host.zero_()  # the pinned buffer is reused later: the result is a copy
    assert first.tolist() == [0, 1, 2, 3] and pending.result() is first and Event.waits == 1


def test_cpu_backend_streams_batches_in_order_and_times_each_shape_once(tiny_program):
    backend = TorchBackend(tiny_program, device="cpu")
    assert backend.options == TorchOptions() and backend.graphs is None and backend.transfers is None
    batches = [frames(1, 32, 64, 0), frames(2, 32, 64, 1), frames(1, 48, 96, 2), frames(1, 32, 64, 3)]
    streamed = list(backend.run_many(iter(batches)))
    assert [s.shape for s in streamed] == [(1, 32, 64), (2, 32, 64), (1, 48, 96), (1, 32, 64)]
    for batch, out in zip(batches, streamed):
        np.testing.assert_array_equal(out, backend(batch))
    assert set(backend.warmups) == {(1, 32, 64), (2, 32, 64), (1, 48, 96)}
    assert all(row["compile_s"] is None and row["first_call_s"] > 0 for row in backend.warmups.values())
    assert backend.warmup(4, 32, 64)["first_call_s"] > 0 and list(backend.run_many([])) == []


def test_cuda_only_options_on_cpu_are_noted_and_bad_options_refused(tiny_program, monkeypatch):
    backend = TorchBackend(tiny_program, device="cpu", options="graphs=on,pinned=on")
    assert not backend.options.graphs and not backend.options.pinned and "CUDA only" in backend.notes[0]
    monkeypatch.setenv("JAL_TORCH_OPTIONS", "compile=fastest")
    with pytest.raises(BackendError, match="JAL_TORCH_OPTIONS.*compile=fastest|compile=fastest"):
        TorchBackend(tiny_program, device="cpu")


def test_compiled_backend_with_frozen_weights_matches_eager(tiny_program, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test
    torch.set_num_threads(1)
    eager = TorchBackend(tiny_program, device="cpu")
    compiled = TorchBackend(tiny_program, device="cpu",
                            options=TorchOptions(compile="default", freeze=True, cache_dir=str(tmp_path)))
    for batch in (frames(1, 32, 64, 4), frames(2, 48, 64, 5)):
        np.testing.assert_array_equal(compiled(batch), eager(batch))
    assert all(row["compile_s"] > 0 for row in compiled.warmups.values()) and len(compiled.warmups) == 2
    assert "compile default + freezing" in compiled.describe()


def test_a_compile_failure_says_how_to_run_without_compiling(tiny_program, tmp_path, monkeypatch):
    from torch._inductor.exc import InductorError
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    backend = TorchBackend(tiny_program, device="cpu", options=f"compile=default,cache_dir={tmp_path}")

    def broken(x):  # what a machine without a C++ compiler raises on the first compiled call
        raise InductorError(RuntimeError("CppCompileError: no working C++ compiler found"), None)
    backend.module = broken
    with pytest.raises(BackendError, match="torch.compile failed .* batch 1, 64x32: .*JAL_TORCH_OPTIONS=compile=off"):
        backend(frames(1, 32, 64))


CACHE_PROBE = """
import json, sys, numpy as np, torch
from torch._dynamo.utils import counters
from jal_deploy.backends.torch_backend import TorchBackend
from jal_deploy.backends.torch_options import TorchOptions
torch.set_num_threads(1)
backend = TorchBackend(sys.argv[1], device="cpu", options=TorchOptions(compile="default", cache_dir=sys.argv[2]))
row = backend.warmup(1, 32, 64)
print(json.dumps({"hits": counters["inductor"]["fxgraph_cache_hit"], "compile_s": row["compile_s"]}))
"""


def test_a_second_process_compiles_from_the_cache(tiny_program, tmp_path):
    """Freezing is off here: on CPU it packs weights for oneDNN, which inductor cannot cache (on CUDA it can)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    cache = tmp_path / "cache"

    def probe():
        out = subprocess.run([sys.executable, "-c", CACHE_PROBE, str(tiny_program), str(cache)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    first = probe()
    assert first["hits"] == 0 and any(cache.iterdir())
    assert probe()["hits"] >= 1


class FakeCuda:
    """Just enough of torch.cuda for `Transfers` on CPU: streams that order nothing (CPU work is synchronous) and
    events that count the waits."""

    waits: list = []

    class Stream:
        def wait_event(self, event):
            pass

    class Event:
        def record(self, stream=None):
            pass

        def synchronize(self):
            FakeCuda.waits.append(self)

    compute = Stream()

    @staticmethod
    def current_stream():
        return FakeCuda.compute

    @staticmethod
    def stream(stream):
        import contextlib
        return contextlib.nullcontext()


class FakeTorch:
    cuda = FakeCuda
    from_numpy = staticmethod(torch.from_numpy)

    @staticmethod
    def empty(shape, dtype, pin_memory):
        assert pin_memory
        return torch.empty(shape, dtype=dtype)


def test_transfers_reuse_a_pinned_buffer_only_after_what_it_carried_is_done(monkeypatch):
    """Two pinned buffers per shape and direction: the third upload waits for the first one's copy, and the third
    download first takes the first result, so no batch is overwritten while it travels."""
    from jal_deploy.backends.torch_cuda import Transfers
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    FakeCuda.waits.clear()
    transfers = Transfers(FakeTorch, "cpu")
    batches = [frames(1, 8, 8, seed) for seed in range(3)]
    uploaded = [transfers.upload(batches[0]).clone(), transfers.upload(batches[1]).clone()]
    assert not FakeCuda.waits
    uploaded.append(transfers.upload(batches[2]).clone())
    assert len(FakeCuda.waits) == 1  # the first buffer's upload, before it is refilled
    for batch, x in zip(batches, uploaded):
        np.testing.assert_array_equal(x.numpy(), batch)
    results = [transfers.download(torch.full((2, 3), float(v))) for v in range(3)]
    assert [r.result()[0, 0] for r in results] == [0.0, 1.0, 2.0]
    assert len(FakeCuda.waits) == 4  # each result waited for once, the first before its buffer was refilled
