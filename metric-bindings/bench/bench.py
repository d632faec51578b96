"""Side-by-side timings: metric_bindings vs what a user would otherwise write, in one process, same inputs.

Full matrix (N, M, D): ours | a bare sgemm on pre-normalised inputs (the floor: same BLAS, no norms) |
numpy normalise + matmul | scikit-learn cosine_similarity | torch normalise + mm.
Row-wise (N, D): ours | numpy einsum / norms | torch F.cosine_similarity(dim=1).
Top-k: ours | numpy normalise + matmul + argpartition | torch mm + topk | faiss IndexFlatIP (normalising,
building the index, searching) | faiss search alone (index prebuilt, queries normalised); and ours' full
(N, M) matrix of the same shape, which top-k's time is compared with.
Medians of --repeat rounds after one warm-up, the methods of a shape timed round-robin with a 0.2 s pause
before each call (other libraries' worker threads stop spinning); ratios are "their time / our time"
(> 1: we are faster).
Also the machine's sgemm GFLOP/s measured in the same run, and our share of it.
With --baseline (another build's extension, e.g. from `make bench BASELINE=<git rev>`): a before/after table,
every shape timed in --pairs back-to-back pairs of calls (ours, the other build), and the median of the
per-pair ratios with its 95 % interval (why: before_after).

Run it as `make bench` (or `make bench-quick`), which unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for this
command only, so that numpy's OpenBLAS picks its best kernel; the kernel each BLAS runs is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import metric_bindings as mb
from metric_bindings import _core

FULL = [(1, 100_000, 512), (256, 100_000, 512), (4096, 4096, 512), (4096, 4096, 64), (100_000, 16, 768),
        (2048, 2048, 2048)]
ROWWISE = [(1_000_000, 128), (100_000, 768)]
TOPK = [(1, 1_000_000, 128, 10), (256, 100_000, 512, 10), (1024, 200_000, 256, 100), (16, 100_000, 768, 1000)]
QUICK_FULL = [(1, 20_000, 512), (64, 20_000, 512), (1024, 1024, 512), (1024, 1024, 64), (20_000, 16, 768),
              (1024, 1024, 1024)]
QUICK_ROWWISE = [(200_000, 128), (20_000, 768)]
QUICK_TOPK = [(64, 20_000, 512, 10)]
SETTLE_S = 0.2  # pause before each timed call; see interleaved_runs


def load_baseline(path: Path):
    """The extension module of another build (e.g. the previous commit's wheel in a second venv), loaded
    beside ours under its own name, so that both builds are timed in one run on the same inputs."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("_core", str(path))
    spec = importlib.util.spec_from_file_location("_core", str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def interleaved_medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median time of each function (see interleaved_runs)."""
    return {k: float(np.median(v)) for k, v in interleaved_runs(fns, repeat).items()}


def interleaved_runs(fns: dict[str, Callable[[], object]], repeat: int, settle: float = SETTLE_S
                     ) -> dict[str, list[float]]:
    """Every timed run of each function, timed round-robin (one call of each per round, after one warm-up
    call each), so that load from other processes on a shared machine hits every method alike.

    Each timed call starts after a pause of `settle` seconds: every BLAS / OpenMP runtime in the process
    (numpy's OpenBLAS, torch's OpenMP pool, ours) keeps its worker threads spinning for up to ~0.1 s after a
    call, and without the pause whichever method comes next in the round would pay for the previous one's
    spinning threads. 0 where no other runtime runs (before_after).
    Each round starts with the next method: on this VM the first call in a round that allocates a large result
    was measured 15-50 % slower than the same call later in the round (fresh memory: docs/vm-memory.md).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        for k in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[k]
            time.sleep(settle)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def blas_report() -> list[str]:
    """Which OpenBLAS each library runs (threadpoolctl sees numpy's and ours; torch reports its own)."""
    lines = [f"metric_bindings: {mb.blas_info()}"]
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            lines.append(
                f"threadpoolctl: {info.get('internal_api')} {info.get('version')} "
                f"arch={info.get('architecture')} threads={info.get('num_threads')} "
                f"({Path(info['filepath']).name})"
            )
    except ImportError:
        lines.append("threadpoolctl not installed")
    core, l2 = (os.environ.get(v, "<unset>") for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    lines.append(f"env: OPENBLAS_CORETYPE={core} OPENBLAS_L2_SIZE={l2}")
    return lines


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def time_full(a: np.ndarray, b: np.ndarray, repeat: int, torch, sk_cos) -> dict[str, list[float]]:
    """Every full-matrix method on the same (a, b): all runs."""
    an, bn = normalize(a), normalize(b)
    out = np.empty((a.shape[0], b.shape[0]), np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    F = torch.nn.functional
    return interleaved_runs(
        {
            "ours": lambda: mb.cosine_similarity(a, b),
            "ours (out=)": lambda: mb.cosine_similarity(a, b, out=out),
            "bare sgemm": lambda: _core.gemm_nt(an, bn, out),
            "numpy": lambda: normalize(a) @ normalize(b).T,
            "sklearn": lambda: sk_cos(a, b),
            "torch": lambda: F.normalize(ta, dim=1) @ F.normalize(tb, dim=1).T,
        },
        repeat,
    )


def bench_full(shapes, repeat: int, rng: np.random.Generator, torch, sk_cos, progress) -> list[dict]:
    rows = []
    for n, m, d in shapes:
        a = rng.standard_normal((n, d), dtype=np.float32)
        b = rng.standard_normal((m, d), dtype=np.float32)
        runs = time_full(a, b, repeat, torch, sk_cos)
        rows.append(
            {"shape": [n, m, d], "strategy": mb.choose_strategy(n, m, d), "flops": 2.0 * n * m * d,
             "times": {k: float(np.median(v)) for k, v in runs.items()},
             "best": {k: float(np.min(v)) for k, v in runs.items()}, "runs": runs}
        )
        progress.update(1)
    return rows


def time_rowwise(a: np.ndarray, b: np.ndarray, repeat: int, torch) -> dict[str, float]:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = np.empty(a.shape[0], np.float32)

    def numpy_rowwise() -> np.ndarray:
        return np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    return interleaved_medians(
        {
            "ours": lambda: mb.paired_cosine_similarity(a, b),
            "ours (out=)": lambda: mb.paired_cosine_similarity(a, b, out=out),
            "numpy einsum": numpy_rowwise,
            "torch F.cosine_similarity": lambda: torch.nn.functional.cosine_similarity(ta, tb, dim=1),
        },
        repeat,
    )


def bench_rowwise(shapes, repeat: int, rng: np.random.Generator, torch, progress) -> list[dict]:
    rows = []
    for n, d in shapes:
        a = rng.standard_normal((n, d), dtype=np.float32)
        b = rng.standard_normal((n, d), dtype=np.float32)
        times = time_rowwise(a, b, repeat, torch)
        rows.append({"shape": [n, d], "bytes": a.nbytes + b.nbytes, "times": times})
        progress.update(1)
    return rows


def time_topk(a: np.ndarray, b: np.ndarray, k: int, repeat: int, torch, faiss) -> dict[str, float]:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    F = torch.nn.functional

    def faiss_topk(index=None) -> tuple[np.ndarray, np.ndarray]:
        q = a.copy()
        faiss.normalize_L2(q)
        if index is None:
            items = b.copy()
            faiss.normalize_L2(items)
            index = faiss.IndexFlatIP(b.shape[1])
            index.add(items)
        return index.search(q, k)

    prebuilt = faiss.IndexFlatIP(b.shape[1])
    items = b.copy()
    faiss.normalize_L2(items)
    prebuilt.add(items)

    def numpy_topk() -> tuple[np.ndarray, np.ndarray]:
        s = normalize(a) @ normalize(b).T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, 1)
        order = np.argsort(-vals, axis=1)
        return np.take_along_axis(vals, order, 1), np.take_along_axis(part, order, 1)

    return interleaved_medians(
        {
            "ours": lambda: mb.topk_cosine(a, b, k),
            "numpy": numpy_topk,
            "torch": lambda: torch.topk(F.normalize(ta, dim=1) @ F.normalize(tb, dim=1).T, k, dim=1),
            "faiss": faiss_topk,
            "faiss search": lambda: faiss_topk(prebuilt),
            "ours full matrix": lambda: mb.cosine_similarity(a, b),
        },
        repeat,
    )


def bench_topk(shapes, repeat: int, rng: np.random.Generator, torch, faiss, progress) -> list[dict]:
    rows = []
    for n, m, d, k in shapes:
        a = rng.standard_normal((n, d), dtype=np.float32)
        b = rng.standard_normal((m, d), dtype=np.float32)
        rows.append({"shape": [n, m, d, k], "times": time_topk(a, b, k, repeat, torch, faiss)})
        progress.update(1)
    return rows


def vs(t: dict[str, float], key: str) -> str:
    """One table cell: their median in ms and the ratio to ours."""
    return f"{t[key] * 1e3:.1f} ({t[key] / t['ours']:.2f}x)"


def table(header: str, rows: list[dict], first_cells, others: list[str], last_cells=lambda r: []
          ) -> list[str]:
    """A markdown table: the shape, the cells first_cells(row) gives, one vs() cell per other method, then the
    cells last_cells(row) gives."""
    out = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        cells = [str(tuple(r["shape"]))] + first_cells(r) + [vs(r["times"], k) for k in others]
        cells += last_cells(r)
        out.append("| " + " | ".join(cells) + " |")
    return out


def table_full(rows: list[dict], peak: float) -> list[str]:
    def first(r: dict) -> list[str]:
        # The bare sgemm writes into a reused buffer, so it is compared with ours (out=): same memory traffic.
        t, gf = r["times"], r["flops"] / r["times"]["ours"] / 1e9
        return [r["strategy"], f"{t['ours'] * 1e3:.1f}", f"{t['ours (out=)'] * 1e3:.1f}",
                f"{t['bare sgemm'] * 1e3:.1f}", f"{t['bare sgemm'] / t['ours (out=)'] * 100:.0f}%",
                f"{gf:.0f} ({gf / peak * 100:.0f}%)"]

    def last(r: dict) -> list[str]:
        # numpy's time swings with the state of its fresh memory (see README): its fastest run, against ours
        best = r["best"]["numpy"]
        return [f"{best * 1e3:.1f} ({best / r['times']['ours']:.2f}x)"]

    header = (
        "| (N, M, D) | strategy | ours ms | ours out= ms | bare sgemm out= ms | ours out= % of bare sgemm "
        "| ours GFLOP/s (% of measured sgemm) | numpy ms (x) | sklearn ms (x) | torch ms (x) "
        "| numpy fastest run ms (x) |"
    )
    return table(header, rows, first, ["numpy", "sklearn", "torch"], last)


def table_rowwise(rows: list[dict]) -> list[str]:
    header = "| (N, D) | ours ms (GB/s) | numpy einsum ms (x) | torch F.cosine_similarity ms (x) |"
    def first(r: dict) -> list[str]:
        ours = r["times"]["ours"]
        return [f"{ours * 1e3:.1f} ({r['bytes'] / ours / 1e9:.1f})"]

    return table(header, rows, first, ["numpy einsum", "torch F.cosine_similarity"])


def table_topk(rows: list[dict]) -> list[str]:
    header = (
        "| (N, M, D, k) | ours ms | ours full matrix ms (top-k / full) | faiss ms (x) "
        "| faiss search ms (x) | numpy matmul+argpartition ms (x) | torch mm+topk ms (x) |"
    )

    def first(r: dict) -> list[str]:
        t = r["times"]
        full = t["ours full matrix"]
        return [f"{t['ours'] * 1e3:.1f}", f"{full * 1e3:.1f} ({t['ours'] / full:.2f})"]

    return table(header, rows, first, ["faiss", "faiss search", "numpy", "torch"])


def plot(full: list[dict], rowwise: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, series = [], {"numpy": [], "sklearn": [], "torch": []}
    for r in full:
        labels.append(str(tuple(r["shape"])))
        for k in series:
            series[k].append(r["times"][k] / r["times"]["ours"])
    for r in rowwise:
        labels.append(f"row-wise {tuple(r['shape'])}")
        series["numpy"].append(r["times"]["numpy einsum"] / r["times"]["ours"])
        series["sklearn"].append(np.nan)
        series["torch"].append(r["times"]["torch F.cosine_similarity"] / r["times"]["ours"])
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = np.arange(len(labels))
    for i, (k, v) in enumerate(series.items()):
        ax.bar(x + (i - 1) * 0.27, v, 0.27, label=k)
    ax.axhline(1, color="black", lw=0.8)
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("their time / our time (higher: we are faster)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("metric_bindings speed-up (medians, same inputs, one process)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def time_sgemm(rng: np.random.Generator, sq: int, repeat: int) -> tuple[float, float]:
    """Bare sgemm (sq, sq, 512) through our scipy-openblas32 and through numpy's OpenBLAS."""
    a = normalize(rng.standard_normal((sq, 512), dtype=np.float32))
    c = np.empty((sq, sq), np.float32)
    t = interleaved_medians(
        {"ours": lambda: _core.gemm_nt(a, a, c), "numpy": lambda: np.matmul(a, a.T, out=c)}, repeat
    )
    return t["ours"], t["numpy"]


def fma_peak() -> tuple[float | None, str]:
    """The machine's float32 FMA peak (GFLOP/s, all cores), from bench/fma_peak.cpp built with -march=native:
    the ceiling for any float32 GEMM here, ours included."""
    import shutil
    import subprocess
    import tempfile

    src = Path(__file__).with_name("fma_peak.cpp")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return None, "FMA peak: not measured (no C++ compiler found; set CXX)"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "fma_peak"
        try:
            subprocess.run([cxx, "-O2", "-march=native", "-pthread", str(src), "-o", str(exe)], check=True,
                           capture_output=True, text=True)
            runs = [subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
                    for _ in range(3)]
            out = max(runs, key=lambda r: float(r[0]))  # the peak: the best of 3 short runs
        except (OSError, subprocess.CalledProcessError) as e:
            return None, f"FMA peak: not measured ({getattr(e, 'stderr', '') or e})".strip()
    gflops, threads, lanes = float(out[0]), int(out[1]), int(out[2])
    return gflops, (f"FMA peak: {gflops:.0f} GFLOP/s ({threads} threads, {lanes}-lane float32 FMAs, "
                    "bench/fma_peak.cpp)")


def build_cases(baseline, full, rowwise, topk, rng: np.random.Generator
                ) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(name, our call, the baseline build's call) for every bench shape, on the same inputs."""
    cases = []
    for n, m, d in full:
        a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((m, d), dtype=np.float32)
        cases.append((f"cosine_similarity {(n, m, d)}", lambda a=a, b=b: mb.cosine_similarity(a, b),
                      lambda a=a, b=b: baseline.cosine_similarity(a, b, None, "auto")))
    for n, d in rowwise:
        a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32)
        cases.append((f"paired {(n, d)}", lambda a=a, b=b: mb.paired_cosine_similarity(a, b),
                      lambda a=a, b=b: baseline.paired_cosine_similarity(a, b, None)))
    for n, m, d, k in topk:
        a, b = rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((m, d), dtype=np.float32)
        cases.append((f"topk {(n, m, d, k)}", lambda a=a, b=b, k=k: mb.topk_cosine(a, b, k),
                      lambda a=a, b=b, k=k: baseline.topk_cosine(a, b, k, mb.DEFAULT_TOPK_BUDGET)))
    return cases


def before_after(cases, pairs: int, progress) -> tuple[list[str], list[dict]]:
    """Ours against the baseline build, shape by shape: `pairs` rounds of one call each, back to back (which
    one opens the round alternates). Each round gives one ratio, baseline time / ours (> 1: we are faster);
    the table reports their median with its 95 % confidence interval, beside the plain medians and the fastest
    runs.

    On this VM a call's time swings by 10-20 % from one call to the next even with nothing else running (the
    host's memory bandwidth and clock; CPU time swings with it), so resolving 3 % takes a few hundred pairs.
    No pause between the calls: neither build keeps threads spinning (both run the one OpenBLAS loaded)."""
    out = ["| call (shape) | ours median ms | baseline median ms | baseline / ours, median of pairs (x) "
           "| 95 % interval | fastest runs (x) |", "|---|---|---|---|---|---|"]
    rows = []
    for name, ours, base in cases:
        runs = interleaved_runs({"ours": ours, "baseline": base}, pairs, settle=0.0)
        ratios = np.sort(np.array(runs["baseline"]) / np.array(runs["ours"]))
        med = float(np.median(ratios))
        # Distribution-free interval for a median: the order statistics n/2 -+ 1.96 sqrt(n)/2.
        half = 0.98 * np.sqrt(len(ratios))
        lo = float(ratios[max(0, int(np.floor(len(ratios) / 2 - half)))])
        hi = float(ratios[min(len(ratios) - 1, int(np.ceil(len(ratios) / 2 + half)))])
        rows.append({"call": name, "runs": runs, "paired_median": med, "paired_ci95": [lo, hi]})
        ours_ms, base_ms = (float(np.median(runs[k])) * 1e3 for k in ("ours", "baseline"))
        out.append(f"| {name} | {ours_ms:.1f} | {base_ms:.1f} | {med:.3f} | {lo:.3f}-{hi:.3f} "
                   f"| {min(runs['baseline']) / min(runs['ours']):.2f} |")
        progress.update(1)
    worst = min(rows, key=lambda r: r["paired_median"])
    out += ["", f"Slowest against the baseline: {worst['call']}, {worst['paired_median']:.3f}x "
            "(median of pairs; 0.970 = 3 % slower)."]
    return out, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller shapes (about 10x less work)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per method, median reported (>= 5)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    p.add_argument("--baseline", type=Path,
                   help="another build's _core*.so: adds a before/after table (see make bench BASELINE=)")
    p.add_argument("--pairs", type=int, default=201,
                   help="with --baseline: back-to-back pairs of calls per shape (>= 5); their ratios' median")
    p.add_argument("--only", choices=["full", "rowwise", "topk"], nargs="*", help="only these shapes")
    p.add_argument("--builds-only", action="store_true",
                   help="with --baseline: only the before/after table (no other libraries)")
    args = p.parse_args(argv)
    if args.repeat < 5 or args.pairs < 5:
        p.error("--repeat and --pairs must be >= 5")
    if args.builds_only and args.baseline is None:
        p.error("--builds-only needs --baseline")
    baseline = load_baseline(args.baseline) if args.baseline is not None else None
    import faiss
    import torch
    from sklearn.metrics.pairwise import cosine_similarity as sk_cos
    from tqdm import tqdm

    torch.set_num_threads(os.cpu_count() or 1)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    only = set(args.only or ["full", "rowwise", "topk"])
    full = (QUICK_FULL if args.quick else FULL) if "full" in only else []
    rowwise = (QUICK_ROWWISE if args.quick else ROWWISE) if "rowwise" in only else []
    topk = (QUICK_TOPK if args.quick else TOPK) if "topk" in only else []
    load = os.getloadavg()
    header = [f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"]
    if baseline is not None:
        header.append(f"baseline build: {args.baseline}")
    header += [f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
              f"faiss {faiss.__version__}, "
              f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"] + blas_report()
    for line in header:
        print(line)
    rng = np.random.default_rng(0)
    data: dict[str, object] = {}
    tables: list[str] = []
    if not args.builds_only:
        # First, before any BLAS call: spinning BLAS workers would take a core from the probe.
        fma, fma_line = fma_peak()
        print(fma_line)
        # The machine's sgemm rate, measured here: our BLAS and numpy's on square pre-normalised inputs.
        sq = 1024 if args.quick else 4096
        t_ours, t_np = time_sgemm(rng, sq, args.repeat)
        flops = 2.0 * sq * sq * 512
        peak = max(flops / t_ours, flops / t_np) / 1e9
        peak_line = (f"sgemm ({sq}, {sq}, 512): scipy-openblas32 {flops / t_ours / 1e9:.0f} GFLOP/s, numpy "
                     f"{flops / t_np / 1e9:.0f} GFLOP/s -> peak used below: {peak:.0f} GFLOP/s")
        print(peak_line)
        with tqdm(total=len(full) + len(rowwise) + len(topk), desc="benchmarks", file=sys.stderr) as progress:
            full_rows = bench_full(full, args.repeat, rng, torch, sk_cos, progress)
            row_rows = bench_rowwise(rowwise, args.repeat, rng, torch, progress)
            topk_rows = bench_topk(topk, args.repeat, rng, torch, faiss, progress)
        header += [peak_line, fma_line]
        tables += ["Full matrix, float32:", ""] + table_full(full_rows, peak) + ["", "Row-wise, float32:", ""]
        tables += table_rowwise(row_rows) + ["", "Top-k, float32:", ""] + table_topk(topk_rows) + [""]
        data.update(peak_gflops=peak, fma_peak_gflops=fma, full=full_rows, rowwise=row_rows, topk=topk_rows)
    if baseline is not None:
        cases = build_cases(baseline, full, rowwise, topk, rng)
        with tqdm(total=len(cases), desc="before/after", file=sys.stderr) as progress:
            lines, rows = before_after(cases, args.pairs, progress)
        title = f"Before/after, float32: ours against the baseline build, {args.pairs} pairs per shape:"
        tables += [title, ""] + lines
        data["before_after"] = rows

    # The command as the user typed it (the Makefile passes it), else this script's own command line.
    cmd = os.environ.get("BENCH_COMMAND") or " ".join(["python bench/bench.py", *(argv or sys.argv[1:])])
    load = os.getloadavg()
    header.append(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    md = [f"Command: `{cmd}` (medians of {args.repeat} round-robin runs after a warm-up; "
          "(x) = their time / ours)", ""]
    md += [f"- {line}" for line in header] + [""] + tables
    text = "\n".join(md)
    print()
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "builds" if args.builds_only else "bench-quick" if args.quick else "bench"
    (args.out / f"{stem}.md").write_text(text + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps({"header": header, **data}, indent=1))
    written = [f"{stem}.md", ".json"]
    if not args.builds_only:
        plot(full_rows, row_rows, args.out / f"{stem}.png")
        written.append(".png")
    print(f"\nwritten: {args.out / written[0]}, " + ", ".join(written[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
