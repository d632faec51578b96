"""Exact top-k over a Dask cluster, checked against one machine: the job of the compose `dask` profile.

    python -m metric_bindings.dask_search --scheduler tcp://dask-scheduler:8786 --workers 2

The items are generated on the workers, block by block, from a seed (no block travels from here); the queries
are sent once. The cluster's top-k (metric_bindings.dask.topk_cosine) is compared with
metric_bindings.topk_cosine on the same items computed in this process. Exit 0 when they agree.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m metric_bindings.dask_search", description=__doc__.split("\n")[0]
    )
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=positive, default=2, help="workers to wait for (default 2)")
    p.add_argument("--items", type=positive, default=400_000, help="rows of the item matrix (default 400000)")
    p.add_argument("--block", type=positive, default=25_000, help="item rows per block (default 25000)")
    p.add_argument("--dim", type=positive, default=256, help="embedding dimension D (default 256)")
    p.add_argument("--queries", type=positive, default=64, help="number of queries (default 64)")
    p.add_argument("-k", type=positive, default=10, help="results per query (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shutdown", action="store_true", help="stop the scheduler and its workers at the end"
    )
    args = p.parse_args(argv)
    if args.k > args.items:
        p.error(f"-k {args.k} is larger than --items {args.items}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as e:
        sys.exit(f"dask_search needs Dask ({e}): pip install 'metric_bindings[dask]'")
    import metric_bindings as mb
    import metric_bindings.dask as mbd

    cluster = None
    if args.scheduler is None:
        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, dashboard_address=":0"
        )
    try:
        with distributed.Client(args.scheduler or cluster) as client:
            client.wait_for_workers(args.workers, timeout=120)
            rng = da.random.default_rng(args.seed)
            items = rng.standard_normal(
                (args.items, args.dim), chunks=(args.block, args.dim), dtype=np.float32
            )
            queries = np.random.default_rng(args.seed + 1).standard_normal(
                (args.queries, args.dim), np.float32
            )
            print(
                f"dask_search: {args.queries} queries x {args.items} items (D={args.dim}, k={args.k}) in "
                f"{len(items.chunks[0])} blocks on {len(client.scheduler_info()['workers'])} workers",
                flush=True,
            )
            t0 = time.perf_counter()
            values, indices = mbd.topk_cosine(queries, items, args.k)
            cluster_s = time.perf_counter() - t0
            if args.shutdown:
                client.shutdown()
        with dask.config.set(scheduler="threads"):  # the same blocks from the same seed, in this process
            whole = items.compute()
        t0 = time.perf_counter()
        want_values, want_indices = mb.topk_cosine(queries, whole, args.k)
        local_s = time.perf_counter() - t0
    finally:
        if cluster is not None:
            cluster.close()
    same = np.array_equal(indices, want_indices)
    close = np.allclose(values, want_values, atol=2e-6, rtol=0)
    print(
        f"dask_search: on the cluster {cluster_s:.2f} s (generating the items included); "
        f"one call here {local_s:.2f} s"
    )
    print(
        f"dask_search: same indices as one machine: {'yes' if same else 'NO'}; values within 2e-6: "
        f"{'yes' if close else 'NO'}"
    )
    return 0 if same and close else 1


if __name__ == "__main__":
    sys.exit(main())
