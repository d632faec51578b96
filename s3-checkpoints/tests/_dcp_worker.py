"""One rank of a real multi-process job (gloo, CPU) for the DCP tests; the parent starts WORLD_SIZE of them.

The demo's MLP (``scripts/train_dcp.py``) sharded with FSDP2 (``fully_shard`` on a CPU device mesh:
parameters and Adam moments are DTensors, one row block per rank). Modes:

* ``save OUT STEP [--reload]``: train 2 steps, save via s3ckpt.dcp as STEP, rank 0 writes the full tensors
  to OUT; with ``--reload`` the same job then loads it back (as ``load`` does) into ``OUT.reloaded``.
* ``load OUT [STEP]``: a differently initialised model/optimizer, load STEP (or latest), rank 0 writes the
  full tensors it got to OUT.
* ``train LOSSES STEPS EVERY``: train with a checkpoint every EVERY steps, resuming from the newest
  verified one; rank 0 appends ``{"step", "loss"}`` lines to LOSSES.

Every protocol event is printed as ``EVENT <rank> <event> [part]``; with ``HOLD_AT="<rank> <event> [part]"``
that rank stops at that event until the parent kills it, so a kill lands exactly there.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from s3ckpt import CheckpointNotFound, S3CkptError, S3Settings
from s3ckpt import dcp as s3dcp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import train_dcp  # noqa: E402 - the demo's model and training step: the tests train exactly that

WIDTH = 1024  # 25 MB of parameters + Adam moments: every rank's object is multipart (5 MiB parts)


def build(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    return train_dcp.build(WIDTH, seed)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> float:
    return train_dcp.train_step(model, opt, step, WIDTH)
_print_lock = threading.Lock()


def report(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    if line == os.environ.get("HOLD_AT"):
        time.sleep(300)  # the parent SIGKILLs this rank here


def on_event(ev: str, info: dict) -> None:
    report(f"EVENT {dist.get_rank()} {ev} {info.get('part', '')}".strip())


def state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optim": osd}


def full(obj):  # noqa: ANN001, ANN201 - nested state dicts
    """Every DTensor gathered to a full tensor (collective: all ranks call it)."""
    if isinstance(obj, dict):
        return {k: full(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [full(v) for v in obj]
    if hasattr(obj, "full_tensor"):
        return obj.full_tensor()
    return obj


def load_into_fresh(out: str, step: int | str, kw: dict) -> None:
    """A differently initialised model and optimizer, loaded from the bucket; rank 0 saves what it got."""
    model, opt = build(seed=2)
    train_step(model, opt, 99)  # optimizer state must exist to be loaded into
    sd = state(model, opt)
    got = s3dcp.load(sd, step, **kw)
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    got_full = full(state(model, opt))
    report(f"EVENT {dist.get_rank()} loaded {got}")
    if dist.get_rank() == 0:
        torch.save(got_full, out)


def settings() -> S3Settings:
    return S3Settings()  # endpoint, keys, bucket from the environment the parent set


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", timeout=s3dcp.collective_timeout(settings()))
    try:
        run_mode(sys.argv[1], sys.argv[2])
    except S3CkptError as e:  # as the demo job does: one line per rank, no traceback
        print(f"rank {dist.get_rank()}: error: {e}", file=sys.stderr, flush=True)
        train_dcp.leave(completed=False)
        sys.exit(2)
    train_dcp.leave(completed=True)  # as the demo job ends


def run_mode(mode: str, out: str) -> None:
    run = os.environ.get("DCP_TEST_RUN", "dcp")
    kw = {"run": run, "settings": settings(), "on_event": on_event}
    if mode == "save":
        step = int(sys.argv[3])
        model, opt = build(seed=1)
        for s in range(2):
            train_step(model, opt, s + step)
        sd = state(model, opt)
        expected = full(sd)
        s3dcp.save(sd, step, metadata={"note": "test"}, part_size=5 * 1024 * 1024, **kw)
        report(f"EVENT {dist.get_rank()} saved {step}")
        if dist.get_rank() == 0:
            torch.save(expected, out)
        if "--reload" in sys.argv:
            load_into_fresh(out + ".reloaded", "latest", kw)
    elif mode == "load":
        load_into_fresh(out, int(sys.argv[3]) if len(sys.argv) > 3 else "latest", kw)
    elif mode == "train":
        steps, every = int(sys.argv[3]), int(sys.argv[4])
        model, opt = build(seed=1)
        start = 0
        try:
            sd = state(model, opt)
            start = s3dcp.load(sd, **kw)
            set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
            report(f"EVENT {dist.get_rank()} resumed {start}")
        except CheckpointNotFound:
            pass
        for s in range(start, steps):
            loss = train_step(model, opt, s)
            if dist.get_rank() == 0:
                with open(out, "a") as f:
                    f.write(json.dumps({"step": s + 1, "loss": loss}) + "\n")
            if (s + 1) % every == 0:
                s3dcp.save(state(model, opt), s + 1, **kw)
                report(f"EVENT {dist.get_rank()} checkpoint {s + 1}")


if __name__ == "__main__":
    main()
