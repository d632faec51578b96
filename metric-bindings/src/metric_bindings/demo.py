"""Toy text-to-video retrieval: caption embeddings (queries) against clip embeddings (the library).

The embeddings are synthetic but shaped like the real thing: every clip belongs to one of a few topics, a
caption is a noisy copy of the topic direction of the clip it describes. The demo retrieves the top-k clips
for
a few captions, checks that they come from the caption's topic, and times the full similarity matrix against
the numpy code a user would otherwise write.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import numpy as np

import metric_bindings as mb

log = logging.getLogger("metric_bindings.demo")
TOPICS = ["cooking", "football", "cats", "mountains", "concert", "traffic", "ocean", "lecture"]


def make_embeddings(
    n_clips: int, n_queries: int, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip embeddings, their topic ids, caption embeddings, one caption per topic in turn)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(TOPICS), dim)).astype(np.float32)
    topic = rng.integers(len(TOPICS), size=n_clips)
    clips = centers[topic] + 0.9 * rng.standard_normal((n_clips, dim)).astype(np.float32)
    q_topic = np.arange(n_queries) % len(TOPICS)
    queries = centers[q_topic] + 0.6 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return clips, topic, queries


def numpy_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What a user writes without this package: normalise both, then a matmul."""
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls after one warm-up call (page faults, thread pools, caches)."""
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="metric-bindings-demo",
        description="Toy text-to-video retrieval with the C++/CBLAS cosine kernels, timed against numpy.",
    )
    p.add_argument(
        "--clips", type=int, default=50_000, help="number of video clips in the library (default 50000)"
    )
    p.add_argument("--queries", type=int, default=64, help="number of captions to search with (default 64)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    p.add_argument("-k", type=int, default=5, help="clips to retrieve per caption (default 5)")
    p.add_argument("--show", type=int, default=3, help="captions whose results are printed (default 3)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs, median reported (default 5)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if min(args.clips, args.queries, args.dim, args.k, args.repeat) < 1 or args.k > args.clips:
        p.error("--clips, --queries, --dim, -k and --repeat must be >= 1, and -k <= --clips")

    log.info("BLAS: %s", mb.blas_info())
    log.info(
        "making %d clip and %d caption embeddings of dimension %d ...", args.clips, args.queries, args.dim
    )
    clips, topic, queries = make_embeddings(args.clips, args.queries, args.dim, args.seed)

    vals, idx = mb.topk_cosine(queries, clips, args.k)
    q_topic = np.arange(args.queries) % len(TOPICS)
    precision = float((topic[idx] == q_topic[:, None]).mean())
    for q in range(min(args.show, args.queries)):
        hits = ", ".join(
            f"clip {i} ({TOPICS[topic[i]]}, {v:.3f})" for i, v in zip(idx[q], vals[q], strict=True)
        )
        print(f'caption {q} "a video about {TOPICS[q_topic[q]]}": {hits}')
    print(f"top-{args.k} precision (retrieved clip has the caption's topic): {precision:.1%}")

    ours = median_time(lambda: mb.cosine_similarity(queries, clips), args.repeat)
    ref = median_time(lambda: numpy_cosine(queries, clips), args.repeat)
    err = float(np.abs(mb.cosine_similarity(queries, clips) - numpy_cosine(queries, clips)).max())
    print(
        f"full ({args.queries} x {args.clips}) similarity, median of {args.repeat}: metric_bindings "
        f"{ours * 1e3:.1f} ms vs numpy normalise+matmul {ref * 1e3:.1f} ms -> {ref / ours:.1f}x faster "
        f"(max abs difference {err:.1e})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
