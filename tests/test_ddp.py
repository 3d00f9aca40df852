"""DDP training path on CPU: 2 processes, gloo backend, tiny backbone."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from slrnet.model import build_model
from slrnet.train import fit, load_checkpoint
from tests.test_train import CPU, small_train_config, synthetic_samples, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = small_train_config(epochs=2, batch_size=2)
        torch.manual_seed(cfg.seed)
        model = build_model(tiny_config())
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        steps: list[int] = []
        fit(model, synthetic_samples(8), model_config=tiny_config(), train_config=cfg,
            class_names=["bg", "r", "b"], checkpoint_path=Path(out) / "run.pt", device=CPU,
            progress=lambda p: steps.append(p.steps_per_epoch))
        torch.save({"state": model.state_dict(), "initial": initial, "steps": steps[0]},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_keeps_replicas_equal_and_only_rank0_writes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 2  # 8 images over 2 ranks, batch 2 per rank
    params = [k for k in r0["state"] if "running" not in k and "num_batches" not in k]
    for k in params:  # gradients are averaged: weights stay identical across ranks
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert any(not torch.equal(r0["state"][k], r0["initial"][k]) for k in params)
    checkpoint = load_checkpoint(tmp_path / "run.pt")
    assert checkpoint["epoch"] == 2
    for k in params:
        assert torch.equal(checkpoint["model"][k], r0["state"][k]), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt", "rank1.pt", "run.pt"]
