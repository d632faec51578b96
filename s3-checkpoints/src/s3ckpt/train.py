"""``s3ckpt-train``: a small real training job (an MLP on scikit-learn's digits) that checkpoints into S3.

It is the demo and the resume-equivalence test subject at once: everything that influences the next step
(weights, optimizer moments, LR schedule, the Python/NumPy/torch RNGs that drive dropout and input noise,
and the position in the shuffled data order) goes into the checkpoint, so a run killed at any moment and
restarted with the same command continues with bit-identical losses.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from s3ckpt.errors import CheckpointNotFound, S3CkptError
from s3ckpt.s3 import add_network_flags, quiet_transport_logs, settings_from_args
from s3ckpt.state import capture_rng_state, restore_rng_state
from s3ckpt.store import CheckpointStore

log = logging.getLogger("s3ckpt.train")


@dataclass
class HParams:
    """Everything that defines the run; stored in every checkpoint (and as readable JSON)."""

    steps: int = 600
    ckpt_every: int = 50
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    hidden: int = 128
    dropout: float = 0.1
    noise: float = 0.05
    seed: int = 0


def load_digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 images, shipped inside the package: no download)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    return x[:1500], y[:1500], x[1500:], y[1500:]


def make_model(hp: HParams) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hp.hidden), nn.ReLU(), nn.Dropout(hp.dropout),
                         nn.Linear(hp.hidden, hp.hidden), nn.ReLU(), nn.Dropout(hp.dropout),
                         nn.Linear(hp.hidden, 10))


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The shuffled sample order of one epoch, a pure function of (seed, epoch): resumable by position."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_at(step: int, n: int, hp: HParams) -> tuple[int, int, torch.Tensor]:
    per_epoch = n // hp.batch_size
    epoch, pos = divmod(step, per_epoch)
    order = epoch_order(n, epoch, hp.seed)
    return epoch, pos, order[pos * hp.batch_size:(pos + 1) * hp.batch_size]


def train(store: CheckpointStore, hp: HParams, *, resume: str = "auto", keep_last: int | None = 3,
          async_save: bool = False, loss_log: str | None = None, progress: bool = True,
          throttle: float = 0.0) -> dict[str, Any]:
    """Train to ``hp.steps``, checkpointing every ``hp.ckpt_every`` steps; resume from the bucket first."""
    import numpy as np

    torch.set_num_threads(1)  # identical float reduction order in every process: bit-exact resume
    torch.use_deterministic_algorithms(True)
    random.seed(hp.seed)
    np.random.seed(hp.seed)
    torch.manual_seed(hp.seed)
    xtr, ytr, xte, yte = load_digits_data()
    model = make_model(hp)
    opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.steps)
    start = 0
    if resume != "never":
        cleaned = store.recover()
        if any(cleaned.values()):
            log.info("cleaned after a crashed save: %s", cleaned)
        try:
            ck = store.load("latest")
        except CheckpointNotFound:
            if resume == "must":
                raise
            ck = None
        if ck is not None:
            model.load_state_dict(ck.state["model"])
            opt.load_state_dict(ck.state["optimizer"])
            sched.load_state_dict(ck.state["scheduler"])
            restore_rng_state(ck.state["rng"])
            start = int(ck.metadata["step"])
            print(f"resumed from step {start} (s3://{store.bucket}/{store.step_prefix(start)})", flush=True)
    if start == 0:
        print(f"starting run {store.run!r} from scratch", flush=True)
    lossf = open(loss_log, "a") if loss_log else None  # noqa: SIM115
    loss_fn = nn.CrossEntropyLoss()
    from tqdm import tqdm

    bar = tqdm(total=hp.steps, initial=start, desc=f"train {store.run}", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    loss_v = float("nan")
    try:
        for step in range(start, hp.steps):
            model.train()
            epoch, pos, idx = batch_at(step, len(xtr), hp)
            noise = np.random.normal(0.0, hp.noise, (len(idx), 64)).astype(np.float32)
            xb = xtr[idx] + torch.from_numpy(noise)
            xb = xb * (1.0 + 0.01 * random.random())  # touches Python's RNG too
            loss = loss_fn(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_v = loss.item()
            done = step + 1
            if throttle:
                time.sleep(throttle)
            if lossf:
                lossf.write(json.dumps({"step": done, "loss": loss_v}) + "\n")
                lossf.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.4f}", epoch=epoch)
            if done % hp.ckpt_every == 0 or done == hp.steps:
                nxt_epoch, nxt_pos, _ = batch_at(done, len(xtr), hp)
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "rng": capture_rng_state()}
                meta = {"step": done, "epoch": nxt_epoch, "hparams": asdict(hp), "loss": loss_v,
                        "data_position": {"epoch": nxt_epoch, "batch_in_epoch": nxt_pos, "seed": hp.seed}}
                store.save(done, state, meta, keep_last=keep_last, blocking=not async_save)
                bar.write(f"checkpoint step {done} {'queued' if async_save else 'saved'} "
                          f"(loss {loss_v:.4f})")
                sys.stdout.flush()
        store.close()
    finally:
        bar.close()
        if lossf:
            lossf.close()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    print(f"done: {hp.steps} steps, last loss {loss_v:.4f}, test accuracy {acc:.3f}", flush=True)
    return {"start": start, "accuracy": acc, "loss": loss_v}


def build_parser() -> argparse.ArgumentParser:
    hp = HParams()
    p = argparse.ArgumentParser(
        prog="s3ckpt-train",
        description="Train an MLP on scikit-learn's digits, checkpointing into an S3 bucket every K steps. "
                    "Run it again after a crash (or Ctrl-C, or kill -9): it resumes bit-exactly from the "
                    "newest verified checkpoint. S3 endpoint/credentials come from S3CKPT_* env vars.")
    p.add_argument("--run", default=os.environ.get("S3CKPT_RUN", "digits"), help="run name (default: digits)")
    p.add_argument("--steps", type=int, default=hp.steps, help=f"total optimizer steps (default {hp.steps})")
    p.add_argument("--ckpt-every", type=int, default=hp.ckpt_every, help="checkpoint every K steps")
    p.add_argument("--batch-size", type=int, default=hp.batch_size)
    p.add_argument("--lr", type=float, default=hp.lr)
    p.add_argument("--seed", type=int, default=hp.seed)
    p.add_argument("--resume", choices=["auto", "never", "must"], default="auto",
                   help="auto: continue from the bucket if a checkpoint exists (default); never: start over; "
                        "must: fail if there is none")
    p.add_argument("--keep-last", type=int, default=3,
                   help="keep the newest N verified checkpoints (0 = keep all)")
    p.add_argument("--async-save", action="store_true", help="save in a background thread")
    p.add_argument("--loss-log", help="append one JSON line {step, loss} per step to this file")
    p.add_argument("--endpoint", help="S3 endpoint URL (env S3CKPT_ENDPOINT)")
    p.add_argument("--bucket", help="bucket (env S3CKPT_BUCKET, default checkpoints)")
    p.add_argument("--prefix", help="key prefix (env S3CKPT_PREFIX, default ckpt)")
    add_network_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--throttle", type=float, default=0.0, help="sleep this many seconds per step (demos)")
    return p


DEMO_DEPS = {"numpy": "numpy", "sklearn": "scikit-learn", "tqdm": "tqdm"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [pkg for mod, pkg in DEMO_DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        print(f"s3ckpt-train: error: the demo trainer needs {', '.join(missing)}: "
              f"pip install 's3ckpt[demo]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the trainer's own notes; the library and the HTTP stack stay at WARNING
    quiet_transport_logs()
    hp = HParams(steps=args.steps, ckpt_every=args.ckpt_every, batch_size=args.batch_size, lr=args.lr,
                 seed=args.seed)
    try:
        settings = settings_from_args(args, endpoint=args.endpoint, bucket=args.bucket, prefix=args.prefix)
        store = CheckpointStore(settings=settings, run=args.run)
        train(store, hp, resume=args.resume, keep_last=args.keep_last or None, async_save=args.async_save,
              loss_log=args.loss_log, progress=not args.no_progress, throttle=args.throttle)
    except S3CkptError as e:
        print(f"s3ckpt-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("s3ckpt-train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
