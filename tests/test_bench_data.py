"""Processes side by side on one bench folder (seeds, or row groups as bench/gpu_ablation.sh starts them) generate its
frames once and train each run once."""
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENSURE = ("import sys; from pathlib import Path; sys.path.insert(0, 'bench'); "
          "from ablation_protocol import QUICK, Protocol, ensure_data; "
          "print(sorted(p.name for p in ensure_data(Path(sys.argv[1]), Protocol(**QUICK)).values()))")


def test_a_second_seed_waits_for_the_frames_the_first_is_writing_then_reads_them(tmp_path, bench_module):
    root = tmp_path / "data"
    with bench_module("ablation_protocol").locked(root):  # the first seed, in the middle of writing the frames
        second = subprocess.Popen([sys.executable, "-c", ENSURE, str(root)], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3)
        assert second.poll() is None and not list(root.glob("*-seed*"))  # it waits and writes nothing
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert out.strip() == "['eval-seed1127', 'source-val-seed1000', 'train-seed0']"
    assert all((root / name / "synth.json").is_file() for name in ("eval-seed1127", "source-val-seed1000", "train-seed0"))


def test_a_row_group_waits_for_the_pretraining_another_process_is_training_then_starts_from_it(tmp_path,
                                                                                             bench_module):
    bench = [sys.executable, str(ROOT / "bench/synthetic_ablation.py"), "--out", str(tmp_path), "--quick",
             "--threads", "1", "--seeds", "0", "--cr-warm-iters", "2"]
    assert subprocess.run([*bench, "--rows", "prior"], cwd=ROOT, capture_output=True).returncode == 0  # the frames
    seed = tmp_path / "seed0"
    with bench_module("ablation_protocol").locked(seed / "pretrain"):  # the colour rows' process, training it
        cr = subprocess.Popen([*bench, "--rows", "cr"], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(8)
        assert cr.poll() is None and not (seed / "pretrain").exists()  # waits instead of training it a second time
    out, err = cr.communicate(timeout=300)
    assert cr.returncode == 0, err[-2000:]
    assert (seed / "pretrain" / "result.json").is_file() and (seed / "pretrain-cr" / "result.json").is_file()
    assert any(line.split()[:1] == ["cr"] for line in out.splitlines())  # the row is in the table


def test_source_frames_give_the_source_more_frames_than_the_target_and_the_same_first_ones(tmp_path, bench_module):
    proto = bench_module("ablation_protocol")
    quick = {**proto.QUICK, "frames": 3}
    equal = proto.ensure_data(tmp_path / "equal", proto.Protocol(**quick))["train"]
    more = proto.ensure_data(tmp_path / "more", proto.Protocol(**quick, source_frames=5))["train"]

    def frames(tree, folder):
        return sorted(p.relative_to(tree / folder) for p in (tree / folder).rglob("*.png"))
    assert len(frames(equal, "gta5/images")) == 3 and len(frames(more, "gta5/images")) == 5
    assert frames(more, "cityscapes/leftImg8bit") == frames(equal, "cityscapes/leftImg8bit")  # the target is the same
    for name in frames(equal, "gta5/images"):  # the first source frames too, byte for byte
        assert (more / "gta5/images" / name).read_bytes() == (equal / "gta5/images" / name).read_bytes()
