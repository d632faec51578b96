"""In-process CPU latency of every form side by side, with ratios to the usual baseline (PyTorch).

Why: the forms exist to be faster (or smaller) than the PyTorch model without drifting; this shows what each
buys on a CPU, all in one run on the same token ids. Run: ``.venv/bin/python bench/forms_inprocess.py``
(``--batch 8 --seq 64 --repeats 30``). Never run by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tritonserving.data import read_sentences, tokenizer
from tritonserving.drift import runner_for

FORMS = ("torch", "fp32", "openvino", "fp16", "int8", "int8_trt")


def inputs(build_dir: str, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Real corpus text cut/padded to exactly ``seq`` tokens, ``batch`` rows."""
    text = read_sentences("corpus")
    return tokenizer(build_dir)([" ".join(text[i:] + text[:i]) for i in range(batch)], pad_to=seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--budget-s", type=float, default=60.0, help="max seconds of timing per form")
    args = parser.parse_args()
    ids, mask = inputs(args.build_dir, args.batch, args.seq)
    rows = []
    for name in FORMS:
        run = runner_for(name, args.build_dir)
        run(ids, mask)  # warm-up (graph optimisation, allocations)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < args.repeats and time.perf_counter() - start < args.budget_s:
            t0 = time.perf_counter()
            run(ids, mask)
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times) * 1e3, len(times)))
    base = rows[0][1]
    print(f"batch {args.batch} x seq {args.seq}, median of up to {args.repeats} runs (shared 2-core CPU)")
    print("| form | median ms | runs | sentences/s | speed vs torch |\n| --- | ---: | ---: | ---: | ---: |")
    for name, ms, n in rows:
        print(f"| {name} | {ms:.1f} | {n} | {args.batch / ms * 1e3:.0f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
