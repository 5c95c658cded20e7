"""DistributedDataParallel on CPU with the gloo backend: two processes stay in sync."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_training import tiny_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, synth_root, out, bn_mode):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from training.engine import Trainer
    torch.set_num_threads(1)
    cfg = tiny_cfg(synth_root, "jal-wtm", iters=3)
    cfg.model.bn_mode = bn_mode
    trainer = Trainer(cfg, out, progress=False)
    trainer.run()
    state = {**{f"g.{k}": v for k, v in trainer.model.state_dict().items()},
             **{f"{n}.{k}": v for n, d in trainer.discs.items() for k, v in d.state_dict().items()}}
    torch.save(state, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("bn_mode", ["frozen", "train"])
def test_two_gloo_processes_keep_identical_weights(synth_root, tmp_path, bn_mode):
    mp.spawn(_worker, args=(2, _free_port(), synth_root, str(tmp_path), bn_mode), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    # With batch statistics each process keeps its own BN running averages (documented); all else is shared.
    shared = [k for k in a if bn_mode == "frozen" or "running_" not in k]
    assert len(shared) > 100 and all(torch.equal(a[k], b[k]) for k in shared)
    init = initial_state(synth_root, bn_mode)
    changed = [k for k in init if not torch.equal(init[k], a[f"g.{k}"])]
    assert any(k.startswith("wtm2") for k in changed) and any(k.startswith("encoder") for k in changed)
    assert (tmp_path / "checkpoints" / "last.pth").exists()  # rank 0 writes, once


def initial_state(synth_root, bn_mode):
    from training.models import build_model
    torch.manual_seed(0)
    m = tiny_cfg(synth_root).model
    return build_model(m.arch, m.num_classes, width=m.width, wtm="both", bn_mode=bn_mode).state_dict()
