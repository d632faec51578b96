"""A small multi-process training job that checkpoints with s3ckpt.dcp: run one copy per rank.

    torchrun --standalone --nproc-per-node 2 scripts/train_dcp.py --run-name mlp --steps 40 --ckpt-every 10

An MLP sharded with FSDP2 (``fully_shard`` on a CPU device mesh, gloo): every rank holds one row block of
each weight and of its Adam moments. Every ``--ckpt-every`` steps all ranks save through s3ckpt.dcp (the
step exists once rank 0 wrote the manifest, after every rank's objects were complete); at start the job
resumes from the newest verified step. Each rank's batch is a pure function of (step, rank), so a job
killed at any moment and started again logs exactly the losses of an unbroken one. S3 endpoint and keys
come from the S3CKPT_* environment variables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from s3ckpt import CheckpointNotFound, S3CkptError
from s3ckpt import dcp as s3dcp
from s3ckpt.s3 import S3Settings, quiet_transport_logs


def build(width: int, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)  # the same initial weights on every rank, before sharding
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, 8))
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, step: int, width: int) -> float:
    """One optimizer step on this rank's batch for ``step``; returns the loss averaged over ranks."""
    g = torch.Generator().manual_seed(1000 * step + dist.get_rank())
    x, y = torch.randn(16, width, generator=g), torch.randint(0, 8, (16,), generator=g)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    t = loss.detach().clone()
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def leave(completed: bool) -> None:
    """Destroy the process group, cleanly. After a completed run every rank first waits for the others, so
    none tears its connections down while a peer still talks to it; then the modules and optimizer state
    that hold the group are freed now, not by gloo threads during interpreter exit (which aborts)."""
    if completed:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def train(a: argparse.Namespace) -> None:
    rank = dist.get_rank()
    model, opt = build(a.width, a.seed)
    start = 0
    try:
        msd, osd = get_state_dict(model, opt)
        sd = {"model": msd, "optim": osd}
        start = s3dcp.load(sd, run=a.run)
        set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        if rank == 0:
            print(f"resumed from step {start}", flush=True)
    except CheckpointNotFound:
        if rank == 0:
            print(f"starting run {a.run!r} from scratch on {dist.get_world_size()} ranks", flush=True)
    for step in range(start, a.steps):
        loss = train_step(model, opt, step, a.width)
        done = step + 1
        if rank == 0 and a.loss_log:
            with open(a.loss_log, "a") as f:
                f.write(json.dumps({"step": done, "loss": loss}) + "\n")
        if done % a.ckpt_every == 0 or done == a.steps:
            msd, osd = get_state_dict(model, opt)
            s3dcp.save({"model": msd, "optim": osd}, done, run=a.run, metadata={"loss": loss},
                       keep_last=a.keep_last or None)
            if rank == 0:
                print(f"checkpoint step {done} committed (loss {loss:.4f})", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # not --run: torchrun would take it for its own --run-path
    p.add_argument("--run-name", dest="run", default=os.environ.get("S3CKPT_RUN", "mlp-dcp"),
                   help="run name (env S3CKPT_RUN, default mlp-dcp)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--ckpt-every", type=int, default=10)
    p.add_argument("--width", type=int, default=1024, help="hidden width (1024: 25 MB of state)")
    p.add_argument("--keep-last", type=int, default=0, help="keep the newest N verified steps (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss-log", help="rank 0 appends one JSON line {step, loss} per step here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    quiet_transport_logs()
    try:  # bad S3CKPT_* timeout values: one line, before any rank waits for another
        timeout = s3dcp.collective_timeout(S3Settings())
    except S3CkptError as e:
        print(f"train_dcp: error: {e}", file=sys.stderr)
        return 2
    # longer than the slowest S3 call can take to fail: a rank stuck on the network reports its own error
    dist.init_process_group("gloo", timeout=timeout)
    completed = False
    try:
        train(a)
        completed = True
    except S3CkptError as e:
        print(f"train_dcp (rank {dist.get_rank()}): error: {e}", file=sys.stderr)
        return 2
    finally:
        leave(completed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
