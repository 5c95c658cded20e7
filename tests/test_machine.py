"""Every benchmark names its CPU: the parsing of /proc/cpuinfo on the CPUs the project meets."""
from jal_deploy.machine import cpu_info, cpu_summary, emulated_bf16, native_bf16

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
"""
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512bw avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
"""


def test_avx2_only_cpu_lists_what_it_lacks():
    info = cpu_info(EPYC_AVX2)
    assert info["model"] == "AMD EPYC 7B13"
    assert info["isa"] == {"AVX2": True, "AVX-512F": False, "AVX-512 VNNI": False, "AVX-VNNI": False, "AMX": False,
                           "AVX-512 BF16": False, "AMX-BF16": False}
    assert cpu_summary(EPYC_AVX2).endswith("cores: AVX2; no AVX-512F, AVX-512 VNNI, AVX-VNNI, AMX, AVX-512 BF16, "
                                           "AMX-BF16")
    assert native_bf16(EPYC_AVX2) is False


def test_amx_cpu_lists_every_instruction_set():
    assert cpu_summary(XEON_AMX).endswith("cores: AVX2, AVX-512F, AVX-512 VNNI, AVX-VNNI, AMX, AMX-BF16; "
                                          "no AVX-512 BF16")
    assert native_bf16(XEON_AMX) is True
    # Cooper Lake: bf16 in AVX-512 without AMX
    assert native_bf16("model name\t: Xeon\nflags\t\t: avx2 avx512f avx512_bf16\n") is True


def test_unknown_platform_says_so_instead_of_guessing():
    assert cpu_info("")["isa"]["AVX2"] is None and "instruction sets unknown" in cpu_summary("")
    assert native_bf16("") is None


def test_this_machine_is_described():
    assert "cores" in cpu_summary()


def test_bf16_autocast_on_a_cpu_that_emulates_it_warns_and_says_what_to_use(synth_root, tmp_path):
    import warnings

    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    assert "run.amp=none" in emulated_bf16("bf16", "cpu", EPYC_AVX2)
    assert emulated_bf16("bf16", "cpu", XEON_AMX) is None      # native bf16: the fast path
    assert emulated_bf16("none", "cpu", EPYC_AVX2) is None     # fp32: nothing to say
    assert emulated_bf16("bf16", "cuda", EPYC_AVX2) is None    # the GPU computes it
    assert emulated_bf16("bf16", "cpu", "") is None            # unknown instruction sets: no guess
    cfg = tiny_cfg(synth_root, "source-only", iters=1)
    cfg.run.amp, cfg.run.device = "bf16", "cpu"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, tmp_path / "run", progress=False)
    said = [str(w.message) for w in caught if "run.amp=bf16" in str(w.message)]
    assert said == ([emulated_bf16("bf16", "cpu")] if emulated_bf16("bf16", "cpu") else [])  # this machine's CPU
