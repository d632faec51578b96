"""metric_bindings.dask.topk_cosine on a LocalCluster of 1 worker process, then 2, on the same data.

    .venv/bin/python bench/dask_workers.py [--items 800000] [--dim 256] [--queries 256] [-k 10] [--repeat 5]

Each worker has one thread (and METRIC_BINDINGS_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1), so that the second
worker is the only extra compute. The items are generated once on the workers from a seed and kept there
(persist), then every run times the top-k alone (scheduling included). Prints a markdown table with the median
and the 2-worker speed-up. On a shared machine the ratio depends on what else runs: quote it with the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import dask.array as da
import distributed
import numpy as np

import metric_bindings.dask as mbd


def time_workers(workers: int, args: argparse.Namespace) -> list[float]:
    with (
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(workers, timeout=120)
        rng = da.random.default_rng(0)
        items = rng.standard_normal((args.items, args.dim), chunks=(args.block, args.dim), dtype=np.float32)
        items = items.persist()
        distributed.wait(items)
        queries = np.random.default_rng(1).standard_normal((args.queries, args.dim), np.float32)
        mbd.topk_cosine(queries, items, args.k)  # warm-up: imports and scratch on every worker
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            mbd.topk_cosine(queries, items, args.k)
            times.append(time.perf_counter() - t0)
        return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=800_000)
    p.add_argument("--block", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    # Read by the worker processes when they start: one thread each.
    os.environ.update(METRIC_BINDINGS_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    medians = {w: statistics.median(time_workers(w, args)) for w in (1, 2)}
    print(
        f"top-k of {args.queries} queries over {args.items} x {args.dim} float32 items, k={args.k}, "
        f"blocks of {args.block} rows, median of {args.repeat} (load average {os.getloadavg()[0]:.1f})\n"
    )
    print("| workers | seconds | speed-up |\n| ---: | ---: | ---: |")
    for w, s in medians.items():
        print(f"| {w} | {s:.3f} | {medians[1] / s:.2f}x |")


if __name__ == "__main__":
    main()
