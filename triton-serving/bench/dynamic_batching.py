"""Does Triton's dynamic batcher pay off here? The same form served twice, with and without it, side by side.

Builds a throw-away repository (under build/bench-batching) with two copies of one CPU form: the generated
one (``dynamic_batching`` on) and ``<form>_nobatch`` (same model files, ``dynamic_batching`` removed), starts
the native Triton on free ports, runs perf_analyzer on both at the same concurrency levels with the same
realistic token ids, and prints throughput and p95 latency with the ratio batched / unbatched per level.

    .venv/bin/python bench/dynamic_batching.py          # minilm_onnx, seq 64, concurrency 1,2,4,8
    .venv/bin/python bench/dynamic_batching.py --seq-len 128 --form minilm_openvino

Never run by the tests (it takes a minute or more); timings on a shared machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonserving.data import artefact
from tritonserving.native_server import CPU_REPOSITORY, NativeTriton
from tritonserving.perf import make_inputs, run_point, write_inputs


def _mirror(src: Path, dst: Path, name: str, batching: bool) -> None:
    """Copy of a model dir (files hard-linked) with its config renamed and dynamic batching on or off."""
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name != "config.pbtxt":
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    cfg = text_format.Parse((src / "config.pbtxt").read_text(), mc.ModelConfig())
    cfg.name = name
    if not batching:
        cfg.ClearField("dynamic_batching")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.pbtxt").write_text(text_format.MessageToString(cfg))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--form", default="minilm_onnx")
    parser.add_argument("--repository", type=Path, default=CPU_REPOSITORY)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--interval-ms", type=int, default=1500)
    args = parser.parse_args()

    src = args.repository / args.form
    if not (src / "config.pbtxt").exists():
        print(f"error: {src} not found; run `make repo` first", file=sys.stderr)
        return 2
    work = artefact("bench_batching")
    shutil.rmtree(work, ignore_errors=True)
    repo = work / "repository"
    _mirror(src, repo / args.form, args.form, batching=True)
    _mirror(src, repo / f"{args.form}_nobatch", f"{args.form}_nobatch", batching=False)
    data = write_inputs(make_inputs((args.seq_len,)), work)[args.seq_len]
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    with NativeTriton(repo, log_file=work / "tritonserver.log") as server:
        for conc in levels:
            pair = [
                run_point(model, server.grpc_url, data, args.seq_len, conc, work, args.interval_ms,
                          stability=15, max_trials=8, timeout_s=300)
                for model in (args.form, f"{args.form}_nobatch")
            ]  # fmt: skip
            rows.append((conc, *pair))
            on, off = pair
            print(f"concurrency {conc}: batched {on.throughput:.1f} seq/s (server batch "
                  f"{on.avg_server_batch:.2f}, p95 {on.p95_ms:.1f} ms, {on.status}) | unbatched "
                  f"{off.throughput:.1f} seq/s (p95 {off.p95_ms:.1f} ms, {off.status})",
                  flush=True)  # fmt: skip
    print(f"\n{args.form}, seq {args.seq_len}: dynamic batching on vs off (native Triton CPU, gRPC)\n")
    print("| concurrency | batched seq/s | server batch | unbatched seq/s | ratio | p95 batched ms "
          "| p95 unbatched ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for conc, on, off in rows:
        ratio = on.throughput / off.throughput if off.throughput else float("nan")
        print(f"| {conc} | {on.throughput:.1f} | {on.avg_server_batch:.2f} | {off.throughput:.1f} "
              f"| {ratio:.2f}x | {on.p95_ms:.1f} | {off.p95_ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
