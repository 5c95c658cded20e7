"""The shipped demo model: its card, its metadata and its measured mIoU agree."""
import hashlib
import json
import re
from pathlib import Path

import pytest

from jal_deploy.backends import open_backend
from jal_deploy.job import run_job
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source
from jal_deploy.synth import generate

MODELS = Path(__file__).resolve().parents[1] / "models"
CARD = (MODELS / "README.md").read_text()
ROWS = re.findall(r"^\| `((?:jal-wtm-ssl|source-only)-synthetic-r18[.\w]*\.onnx)` \| (\w+) \| ([\d,]+) bytes \| "
                  r"`([0-9a-f]{64})` \|$", CARD, re.M)


def test_card_lists_every_shipped_model_with_size_and_checksum():
    assert sorted(r[0] for r in ROWS) == sorted(p.name for p in MODELS.glob("*.onnx")) and len(ROWS) == 5
    total = 0
    for name, precision, size, sha in ROWS:
        data = (MODELS / name).read_bytes()
        assert len(data) == int(size.replace(",", "")) and hashlib.sha256(data).hexdigest() == sha, name
        total += len(data)
    assert total < 25e6  # the budget for the shipped models (models/ stays small enough to clone)


def test_card_and_embedded_metadata_agree():
    for name, precision, _, _ in ROWS:
        info = open_backend(MODELS / name).info
        assert info.precision == precision
        assert f"`{info.arch}`" in CARD and f"input size `{info.input_size[0]}x{info.input_size[1]}`" in CARD
        assert f"(protocol `{info.protocol}`)" in CARD and f"{info.num_classes} Cityscapes classes" in CARD
        assert info.input_format == "uint8_bgr_nhwc" and info.dynamic
        assert info.output == ("scores" if name.endswith(".scores.onnx") else "labels")
        assert f"**{info.provenance['iteration']} JAL+WTM iterations**" in CARD
        assert info.provenance["preset"] == "synthetic-bench"
        if name.startswith("jal-wtm"):
            shown = json.loads(re.search(r"provenance `(\{.*?\})`", CARD, re.S).group(1).replace("\n  ", " "))
            for key, value in shown.items():
                assert info.provenance[key] == pytest.approx(value, abs=5e-5) if isinstance(value, float) \
                    else info.provenance[key] == value, key
        else:  # the comparison row: source-only for the same iterations ("continues source-only for the same 400")
            assert info.provenance["method"] == "source-only"
            assert f"continues source-only for the same {info.provenance['iteration']} iterations" in " ".join(CARD.split())
    parity = json.loads((MODELS / "jal-wtm-ssl-synthetic-r18.parity.json").read_text())
    agreement = {p["precision"]: p["argmax_agreement"] for p in parity["parity"]}
    assert f"int8 {agreement['int8']:.3f} %" in CARD and f"fp32 argmax agreement {agreement['fp32']:.5f} %" in CARD
    parity = json.loads((MODELS / "source-only-synthetic-r18.parity.json").read_text())
    agreement = {p["precision"]: p["argmax_agreement"] for p in parity["parity"]}
    assert f"{agreement['int8']:.3f} % argmax agreement" in CARD


@pytest.fixture(scope="module")
def card_val(tmp_path_factory):
    """The exact 100 target val frames the card scores (same seed and subset; frames depend on nothing else)."""
    root = tmp_path_factory.mktemp("card-val")
    generate(root, seed=0, counts={"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": 100}, size=(512, 256),
             progress=False, workers=2)
    return root / "cityscapes"


def _card_table_value(column: int) -> float:
    return float(re.search(r"^\| \*\*mIoU\*\* \| (.*) \|$", CARD, re.M).group(1).split("|")[column].strip(" *"))


def test_shipped_fp32_models_reproduce_the_card_miou_per_class(card_val, tmp_path):
    """fp32 kernels round alike on every x86-64 CPU, so the card's per-class numbers of both shipped fp32 models
    (source-only and adapted, run side by side as the demo runs them) are checked tightly."""
    source_only = Segmenter.from_path(MODELS / "source-only-synthetic-r18.onnx", device="cpu")
    adapted = Segmenter.from_path(MODELS / "jal-wtm-ssl-synthetic-r18.onnx", device="cpu")
    result = run_job(source_only, open_source(f"cityscapes:{card_val}"), tmp_path, save=(), progress=False,
                     compare=adapted)
    assert 100 * result.metrics["miou"] == pytest.approx(_card_table_value(0), abs=0.05)
    assert 100 * result.compare["miou"] == pytest.approx(_card_table_value(1), abs=0.05)
    table = re.findall(r"^\| ([a-z ]+) \| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \|$", CARD, re.M)
    assert len(table) == 19
    for cls, *values in table:
        assert 100 * result.metrics["per_class"][cls] == pytest.approx(float(values[0]), abs=0.05), cls
        assert 100 * result.compare["per_class"][cls] == pytest.approx(float(values[1]), abs=0.05), cls


def test_shipped_scores_model_labels_like_the_labels_model_within_the_card_tolerance(card_val, tmp_path):
    """The scores file is the labels file's graph without its upsample: the runtime's upsampling (cv2, straight to
    the frame size) stands in for the graph's (torch, to 384x192, then nearest)."""
    agree_min, miou_tol = map(float, re.search(r"Checked on any CPU: agreement \*\*>= ([\d.]+) %\*\* and mIoU "
                                                r"within \*\*\+-([\d.]+)\*\*",
                                                " ".join(CARD.split())).groups())
    labels = Segmenter.from_path(MODELS / "jal-wtm-ssl-synthetic-r18.onnx", device="cpu")
    scores = Segmenter.from_path(MODELS / "jal-wtm-ssl-synthetic-r18.scores.onnx", device="cpu")
    result = run_job(labels, open_source(f"cityscapes:{card_val}"), tmp_path, save=(), progress=False, compare=scores)
    assert result.compare["agreement"] >= agree_min and abs(result.compare["miou_delta"]) * 100 <= miou_tol


def _int8_tolerance(pattern: str) -> tuple[float, float]:
    return tuple(map(float, re.search(pattern, " ".join(CARD.split())).groups()))


@pytest.mark.parametrize("family, tolerance", [
    ("jal-wtm-ssl-synthetic-r18", r"agree with the fp32 model's on \*\*>= ([\d.]+) %\*\* of val pixels and the mIoU is "
                              r"within \*\*\+-([\d.]+)\*\*"),
    ("source-only-synthetic-r18", r"Its tolerance: agreement \*\*>= ([\d.]+) %\*\* and mIoU within "
                                  r"\*\*\+-([\d.]+)\*\*")])
def test_shipped_int8_models_agree_with_fp32_within_the_card_tolerance(card_val, tmp_path, family, tolerance):
    """int8 kernels round differently on AVX2, AVX-512 VNNI and AMX CPUs: the card states a tolerance against
    the fp32 model (pixel agreement, the package's one definition, and mIoU), not per-class constants, and this
    holds on any x86-64 CPU."""
    agree_min, miou_tol = _int8_tolerance(tolerance)
    fp32 = Segmenter.from_path(MODELS / f"{family}.onnx", device="cpu")
    int8 = Segmenter.from_path(MODELS / f"{family}.int8.onnx", device="cpu")
    result = run_job(fp32, open_source(f"cityscapes:{card_val}"), tmp_path, save=(), progress=False, compare=int8)
    assert result.compare["pixels"] == 100 * 512 * 256 and result.compare["agreement"] >= agree_min
    assert abs(result.compare["miou_delta"]) * 100 <= miou_tol
    column = 1 if family.startswith("jal-wtm") else 0
    assert 100 * result.compare["miou"] == pytest.approx(_card_table_value(column), abs=miou_tol)
    if column == 1:
        assert 100 * result.compare["miou"] == pytest.approx(_card_table_value(2), abs=miou_tol)
