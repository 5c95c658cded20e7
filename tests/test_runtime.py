"""The embeddable runtime: backends, Segmenter pre/post-processing, sources and the threaded pipeline."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.deploy import DeployNet, load_trained
from jal_deploy.backends import BackendError, open_backend
from jal_deploy.backends.ort_backend import OnnxRuntimeBackend
from jal_deploy.backends.trt_backend import TensorRTBackend
from jal_deploy.pipeline import Stats, predictions
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import Item, Source, SourceError, open_source


def _frames(n, shape=(64, 128), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def _reference_labels(checkpoint, frame, infer_size):
    """What the reference evaluation computes: network at the inference size, logits upsampled
    (bilinear, align_corners=True) to the frame size, argmax."""
    model, _ = load_trained(checkpoint)
    net = DeployNet(model, [104.00698793, 116.66876762, 122.67891434], [1, 1, 1], "uint8_bgr_nhwc", "logits")
    small = cv2.resize(frame, infer_size, interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        logits = net(torch.from_numpy(small)[None])
        up = F.interpolate(logits, size=frame.shape[:2], mode="bilinear", align_corners=True)
    return up.argmax(1)[0].numpy().astype(np.uint8)


def test_import_of_the_runtime_does_not_import_torch():
    code = ("import sys, jal_deploy.segmenter, jal_deploy.job, jal_deploy.cli.segment, jal_deploy.backends.ort_backend, "
            "jal_deploy.backends.trt_backend; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_logits_artefact_follows_the_reference_evaluation(runtime_models):
    seg = Segmenter.from_path(runtime_models["logits"], device="cpu")
    frame = _frames(1, (70, 150))[0]
    size = seg.inference_size(150, 70)
    assert size == (96, 48)  # training width 96, frame aspect ratio, height a multiple of 8
    ours = seg.predict(frame)
    ref = _reference_labels(runtime_models["checkpoint"], frame, size)
    assert ours.shape == (70, 150) and ours.dtype == np.uint8
    assert (ours == ref).mean() >= 0.999


def test_labels_artefact_matches_the_logits_artefact_at_the_inference_size(runtime_models):
    labels_seg = Segmenter.from_path(runtime_models["labels"], device="cpu")
    logits_seg = Segmenter.from_path(runtime_models["logits"], device="cpu")
    frame = _frames(1, (48, 96), seed=3)[0]  # already at the inference size: no upsampling involved
    assert np.array_equal(labels_seg.predict(frame), logits_seg.predict(frame))
    big = cv2.resize(frame, (192, 96))
    agree = (labels_seg.predict(big) == logits_seg.predict(big)).mean()
    assert 0.9 < agree <= 1.0  # nearest label upsampling vs bilinear logits: only boundaries differ


def test_predict_batch_groups_sizes_and_equals_single_predictions(runtime_models):
    seg = Segmenter.from_path(runtime_models["labels"], device="cpu")
    frames = _frames(2, (64, 128)) + _frames(1, (50, 100), seed=1) + _frames(1, (64, 128), seed=2)
    batch = seg.predict_batch(frames)
    assert [b.shape for b in batch] == [(64, 128), (64, 128), (50, 100), (64, 128)]
    for f, b in zip(frames, batch):
        assert np.array_equal(seg.predict(f), b)


def test_torch_program_backend_matches_onnx_runtime(runtime_models):
    onnx = Segmenter.from_path(runtime_models["logits"], device="cpu")
    program = Segmenter.from_path(runtime_models["pt2"], device="cpu")
    assert program.backend.name == "torch" and program.backend.device == "cpu"
    frame = _frames(1, (64, 128), seed=5)[0]
    assert (onnx.predict(frame) == program.predict(frame)).mean() >= 0.999
    # dynamic programs take sides that are multiples of 8: any frame is resized to such a size
    assert program.accepts.multiple == 8 and "multiples of 8" in program.accepts.describe()
    odd = _frames(1, (50, 100), seed=6)[0]
    assert program.inference_size(100, 50) == (96, 48) and program.predict(odd).shape == (50, 100)
    with pytest.raises(ValueError, match="--size 100x52 is outside .*multiples of 8"):
        Segmenter.from_path(runtime_models["pt2"], device="cpu", size=(100, 52))
    with pytest.raises(BackendError, match="fp16 autocast needs a GPU"):
        Segmenter.from_path(runtime_models["pt2"], device="cpu", precision="fp16")


def test_torch_program_exported_on_cpu_runs_on_another_device(runtime_models):
    """A .pt2 exported on CPU asserts its input's device inside the graph (torch 2.11 on a GPU: "Tensor device
    mismatch! Expected: cpu, Got: cuda:0"): the program's own metadata must move, not only its weights. The meta
    device stands in for CUDA, which the test machine lacks."""
    import torch

    from jal_deploy.backends.torch_backend import program_module

    def devices(module):
        return {str(n.kwargs["device"]) for n in module.graph.nodes if "device" in n.kwargs}
    assert devices(torch.export.load(str(runtime_models["pt2"])).module()) == {"cpu"}
    moved = program_module(torch.export.load(str(runtime_models["pt2"])), "meta")
    assert devices(moved) == {"meta"}
    out = moved(torch.zeros(2, 64, 128, 3, dtype=torch.uint8, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 19, 64, 128)


def test_torch_backend_reports_shape_errors_as_such_and_other_errors_unchanged(runtime_models):
    """A frame outside the exported range is a shape error naming the range; a failure inside the program for a
    frame it accepts (out of GPU memory, a compile failure) keeps its own type and message."""
    from jal_deploy.backends.torch_backend import TorchBackend
    backend = TorchBackend(runtime_models["pt2"], device="cpu")
    with pytest.raises(BackendError, match=r"rejected an input of shape \(1, 16, 128, 3\) uint8 .*height 32-4096"):
        backend(np.zeros((1, 16, 128, 3), np.uint8))
    with pytest.raises(BackendError, match=r"rejected an input of shape \(1, 3, 64, 128\) float32"):
        backend(np.zeros((1, 3, 64, 128), np.float32))

    def out_of_memory(x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    backend.module = out_of_memory
    with pytest.raises(RuntimeError, match="^CUDA out of memory"):
        backend(np.zeros((1, 64, 128, 3), np.uint8))


def test_io_binding_gives_the_same_labels(runtime_models):
    plain = OnnxRuntimeBackend(runtime_models["labels"], "cpu", io_binding=False)
    bound = OnnxRuntimeBackend(runtime_models["labels"], "cpu", io_binding=True)
    x = np.stack(_frames(2, (48, 96)))
    assert np.array_equal(plain(x), bound(x))


def test_explicit_gpu_request_never_falls_back_silently(runtime_models):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback path is covered on CPU-only installs")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
        open_backend(runtime_models["labels"], device="cuda")
    backend = open_backend(runtime_models["labels"], device="auto")
    assert backend.device == "cpu" and "CPUExecutionProvider" in backend.describe()


def test_model_errors_are_clear(runtime_models, tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        open_backend(tmp_path / "missing.onnx")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(BackendError, match="ONNX Runtime cannot load"):
        open_backend(bad)
    with pytest.raises(BackendError, match="unknown model type .txt"):
        open_backend(bad.rename(tmp_path / "model.txt"))
    import onnx  # a valid graph without our metadata
    model = onnx.load(runtime_models["labels"])
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(BackendError, match="exported by jal-export"):
        open_backend(tmp_path / "plain.onnx")
    with pytest.raises(BackendError, match="precision"):
        open_backend(runtime_models["labels"], precision="fp16")


def test_engine_needs_its_sidecar_and_a_matching_tensorrt_and_gpu(runtime_models, tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(BackendError, match="no sidecar model.fp16.engine.json"):
        TensorRTBackend(engine)
    from jal_deploy.backends.ort_backend import OnnxRuntimeBackend as O
    info = json.loads(O(runtime_models["labels"], "cpu").info.to_json())
    (tmp_path / "model.fp16.engine.json").write_text(json.dumps(
        {"model_info": info, "precision": "fp16", "tensorrt": "0.0.1", "gpu": "NVIDIA Imaginary GPU"}))
    try:
        import tensorrt  # noqa: F401
        expected = "built for tensorrt 0.0.1"
    except ImportError:
        expected = "TensorRT is not importable"
    with pytest.raises(BackendError, match=expected):
        TensorRTBackend(engine)


def test_shape_outside_a_static_artefact_is_reported(runtime_models, tmp_path):
    from export.api import export_checkpoint
    path = export_checkpoint(runtime_models["checkpoint"], tmp_path, dynamic=False, log=lambda *_: None)["artefacts"]["onnx"]
    backend = open_backend(path)
    with pytest.raises(BackendError, match="batch 1 at 96x48"):
        backend(np.zeros((1, 40, 80, 3), np.uint8))
    seg = Segmenter(backend)
    assert seg.predict(_frames(1, (64, 128))[0]).shape == (64, 128)  # the Segmenter resizes for it


def test_colorize_overlay_and_label_id_conversion(runtime_models):
    seg = Segmenter.from_path(runtime_models["labels"])
    labels = np.array([[0, 1, 10], [13, 18, 255]], np.uint8)
    colour = seg.colorize(labels)
    assert colour[0, 0].tolist() == [128, 64, 128][::-1] and colour[1, 0].tolist() == [142, 0, 0]  # road, car (BGR)
    assert colour[1, 2].tolist() == [0, 0, 0]
    assert seg.to_label_ids(labels).tolist() == [[7, 8, 23], [26, 33, 0]]
    assert seg.to_train_ids(labels).tolist() == labels.tolist()
    frame = np.full((2, 3, 3), 200, np.uint8)
    over = seg.overlay(frame, labels, opacity=0.25)
    assert over[0, 0].tolist() == [round(0.75 * 200 + 0.25 * c) for c in colour[0, 0]]


def test_sources_are_parsed_like_the_cli(synth_root, tmp_path):
    cs = synth_root / "cityscapes"
    tree = open_source(f"cityscapes:{cs}")
    assert tree.kind == "dataset" and tree.labelled and tree.length == 4
    folder = open_source(str(cs / "leftImg8bit" / "val"))
    assert folder.kind == "folder" and folder.length == 4 and next(iter(folder)).name.count("/") == 1
    glob = open_source(str(cs / "leftImg8bit" / "*" / "*" / "*.png"))
    assert glob.kind == "glob" and glob.length == 10
    one = open_source(str(next((cs / "leftImg8bit" / "val").rglob("*.png"))))
    assert one.kind == "image" and one.length == 1
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "nothing.mp4"))
    with pytest.raises(SourceError, match="unknown file type .txt"):
        (tmp_path / "a.txt").write_text("x")
        open_source(str(tmp_path / "a.txt"))
    with pytest.raises(SourceError, match="camera 7"):
        open_source("7")
    with pytest.raises(SourceError, match="--split and --list"):
        open_source(str(tmp_path), split="val")


def test_dataset_tree_without_labels_is_refused(synth_root, tmp_path):
    import shutil
    root = tmp_path / "cs"
    shutil.copytree(synth_root / "cityscapes" / "leftImg8bit", root / "leftImg8bit")
    with pytest.raises(SourceError, match="4 of 4 images have no label"):
        open_source(f"cityscapes:{root}")


class _Counting(Source):
    """A finite source that records how far reading ran ahead of the consumer."""
    kind = "video"

    def __init__(self, n, live=False, delay=0.0):
        super().__init__("counting")
        self.n, self.live, self.delay, self.read = n, live, delay, 0
        self.length = n

    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.delay)
            self.read += 1
            yield Item(i, f"f{i}", np.full((48, 96, 3), i % 256, np.uint8))


def test_pipeline_queues_are_bounded_and_order_is_kept(runtime_models):
    seg = Segmenter.from_path(runtime_models["labels"])
    src = _Counting(200)
    gen = predictions(seg, src, batch=2)
    first = [next(gen) for _ in range(3)]
    time.sleep(0.5)  # a slow consumer: readers must stop at the queue bounds
    assert src.read <= 3 + 2 * (2 * 2 + 2) + 2 + 2  # consumed + both queues + one batch in flight + one in hand
    rest = list(gen)
    assert [p.item.index for p in first + rest] == list(range(200))
    assert all(p.labels.shape == (48, 96) for p in first + rest)


def test_vid_stride_reuses_predictions_and_keeps_every_frame(runtime_models):
    seg = Segmenter.from_path(runtime_models["labels"])
    stats = Stats()
    preds = list(predictions(seg, _Counting(10), vid_stride=3, stats=stats, fill="repeat"))
    assert len(preds) == 10 and stats.inferred == 4  # frames 0, 3, 6, 9
    assert [p.reused for p in preds] == [i % 3 != 0 for i in range(10)]
    assert preds[1].labels is preds[0].labels


def test_live_sources_drop_stale_frames(slow_segmenter):
    slow = slow_segmenter
    stats = Stats()
    preds = list(predictions(slow, _Counting(60, live=True, delay=0.002), stats=stats))
    assert stats.dropped > 0 and len(preds) + stats.dropped == 60
    assert [p.item.index for p in preds] == sorted(p.item.index for p in preds)


def test_stream_generator_stops_its_threads_when_abandoned(runtime_models, synth_root):
    seg = Segmenter.from_path(runtime_models["labels"])
    before = threading.active_count()
    for i, pred in enumerate(seg.stream(str(synth_root / "cityscapes" / "leftImg8bit"))):
        assert pred.labels.shape == pred.item.frame.shape[:2]
        if i == 1:
            break
    time.sleep(0.3)
    assert threading.active_count() == before


def test_the_report_names_the_thread_that_bounds_the_run(runtime_models, slow_segmenter):
    """A network slower than the source bounds the run from the network thread; a source slower than the network
    from the reader thread. Both stages really run (the delays are sleeps, so the threads never share a core)."""
    slow_net = Stats()
    list(predictions(slow_segmenter, _Counting(20), stats=slow_net))
    name, share = slow_net.bound()
    assert name == "network" and 0.8 < share <= 1.01, slow_net.busy()
    assert slow_net.to_dict()["bound"] == "network" and "bound by the network thread (infer" in slow_net.line()

    slow_source = Stats()
    list(predictions(Segmenter.from_path(runtime_models["labels"]), _Counting(20, delay=0.03), stats=slow_source))
    name, share = slow_source.bound()
    assert name == "reader" and share > 0.8 and slow_source.busy()["network"] < 0.5, slow_source.busy()


def test_scores_artefact_is_the_network_before_its_upsample_and_labels_like_the_logits_one(runtime_models):
    """`--output scores`: the graph ends before the upsample (1/8 of the input size, 64x fewer floats); the runtime
    upsamples as the graph would, so its labels are the logits artefact's, and parity holds against PyTorch."""
    scores, logits = Segmenter.from_path(runtime_models["scores"]), Segmenter.from_path(runtime_models["logits"])
    assert scores.info.output == "scores" and scores.info.output_names == ["scores"]
    frame = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    w, h = scores.inference_size(128, 64)
    out = scores.infer(scores.preprocess(frame)[None])
    full = logits.infer(logits.preprocess(frame)[None])
    assert full.shape == (1, 19, h, w) and out.shape == (1, 19, h // 8 + 1, w // 8 + 1)  # ceil-mode pooling
    up = scores.upsample(out[0], w, h)
    # cv2.remap interpolates with 1/32-pixel weights, torch in float: equal to a few hundredths of the range
    assert np.abs(up.transpose(2, 0, 1) - full[0]).max() < 0.02 * np.abs(full).max()
    assert (up.argmax(2) == full[0].argmax(0)).mean() > 0.99
    assert (scores.predict(frame) == logits.predict(frame)).mean() > 0.99
    (report,) = runtime_models["scores_parity"]
    assert report["passed"] and report["argmax_agreement"] > 99.9 and report["max_abs_logit_error"] < 1e-3


def test_a_scores_graph_cut_from_an_exported_labels_graph_is_the_exported_scores_graph(runtime_models, tmp_path):
    from export.scores_graph import scores_from_graph

    info = scores_from_graph(runtime_models["labels"], tmp_path / "cut.onnx")
    assert info.output == "scores" and info.provenance["cut_from"] == Path(runtime_models["labels"]).name
    cut, made = Segmenter.from_path(tmp_path / "cut.onnx"), Segmenter.from_path(runtime_models["scores"])
    x = cut.preprocess(np.random.default_rng(1).integers(0, 255, (64, 128, 3), dtype=np.uint8))[None]
    assert np.allclose(cut.infer(x), made.infer(x), atol=1e-4)
    with pytest.raises(ValueError, match="already returns scores"):
        scores_from_graph(tmp_path / "cut.onnx", tmp_path / "again.onnx")
    assert not (tmp_path / "again.onnx").exists()
