"""bench/decoder_agreement_probe.py: the teacher's two decoders on the pixels its pseudo labels kept, against the
real labels; its precision is the pseudo-label summary's own."""
import numpy as np
import pytest
import torch



def test_counts_reproduce_the_pseudo_labels_precision_and_measure_the_decoders_dispute(synth_root, adapted, pseudo,
                                                                                        bench_module):
    probe = bench_module("decoder_agreement_probe")
    torch.set_num_threads(1)
    out, summary = pseudo
    counts, names = probe.agreement_counts(adapted, out, synth_root / "cityscapes")
    assert len(names) == 19 and all(v.shape == (19,) for v in counts.values())
    kept = counts["kept"]
    precision = np.where(kept > 0, counts["right"] / np.maximum(kept, 1), np.nan)
    expected = np.array([summary["precision"]["per_class"][n] for n in names], dtype=np.float64)
    np.testing.assert_allclose(precision, expected, atol=1e-9)  # nan where the labels never kept the class
    assert counts["right"].sum() / kept.sum() == pytest.approx(summary["precision"]["overall"])
    assert np.all(counts["disputed"] <= kept) and np.all(counts["right_disputed"] <= counts["disputed"])
    assert np.all(counts["right_disputed"] <= counts["right"])
    # exp(-D) lies in (0, 1]: its sums are at most the pixel counts they average over
    assert np.all(counts["keep_right"] <= counts["right"] + 1e-6)
    assert np.all(counts["keep_wrong"] <= kept - counts["right"] + 1e-6)
    assert counts["keep_right"].sum() + counts["keep_wrong"].sum() > 0
    # a tiny adapted model's decoders do dispute some of its labels (its WTM2 was moved off the identity)
    assert 0 < counts["disputed"].sum() < kept.sum()
    table = probe.report(counts, names)
    assert table.splitlines()[-1].startswith(f"| all kept pixels | {int(kept.sum())} | "
                                            f"{100 * summary['precision']['overall']:.1f} %")
    assert len(table.splitlines()) == 2 + int((kept > 0).sum()) + 1
    assert probe.agreement_counts(adapted, out, synth_root / "cityscapes", limit=1)[0]["kept"].sum() < kept.sum()
