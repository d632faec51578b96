"""``triton-serving perf``: the real perf_analyzer against every served form, beside in-process ONNX Runtime.

Why both: a serving stack is only worth its overhead if it keeps up with calling the model in-process. For
each form and each fixed sequence length (16, 64, 128 tokens of real text) perf_analyzer (from the
``tritonclient`` wheel) sends single-sequence requests at concurrency 1..8 over gRPC; Triton's dynamic batcher
may merge concurrent requests, which we see as the server-side average batch size (inference count / execution
count). perf_analyzer repeats each measurement window until three in a row agree within
``--stability-percentage`` (steady state). The same token ids then go through ONNX Runtime in this process at
batch 1..8 and the Triton / in-process throughput ratios are printed.

Every form is measured twice by default, ids in (``<form>``) and text in (``<form>_text``: the server's
tokenizer, then the form) on strings of whole words that tokenise to the same lengths: the difference is what
server-side tokenisation costs. perf_analyzer (inside the ``tritonclient==2.50.0`` wheel's data files) needs
``libb64.so.0d`` and ``libcudart.so.12``, which ship in the nvidia-pytriton wheel under hashed names: they are
symlinked into a staging lib dir (:func:`perf_analyzer_env`).

Outputs (``build/perf`` by default): ``perf.csv`` (every point), ``perf.md`` (table + ratios) and
``perf.png`` (throughput vs p95 latency). The run is bounded by ``--budget-s``: points left when the budget is
spent are reported as skipped, never silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tritonserving import INPUT_NAMES, TEXT_INPUT, TEXT_SUFFIX, text_model
from tritonserving.client import ClientError
from tritonserving.data import BUILD, Tokenizer, artefact, read_sentences
from tritonserving.figures import save_figure
from tritonserving.native_server import (
    STAGING,
    NativeServerError,
    add_server_arguments,
    served_forms_at,
    wheel_libs_dir,
)
from tritonserving.repository import TOKENIZER_MODEL

SEQ_LENS = (16, 64, 128)
#: samples per sequence length in the input data (perf_analyzer cycles through them)
SAMPLES = 32


@dataclass
class Point:
    """One measured point: a form (or ``inprocess-ort``) at one sequence length and concurrency / batch."""

    form: str
    seq_len: int
    concurrency: int  # perf_analyzer concurrency; for in-process: the batch size
    throughput: float  # sequences per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_server_batch: float  # inference count / execution count (1.0 = no batching happened)
    status: str = "ok"


# ---------------------------------------------------------------------------------------- perf_analyzer
def perf_analyzer_path() -> Path:
    """perf_analyzer from the tritonclient wheel's data files (pip/uv put them in the venv's scripts dir)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "perf_analyzer",
        Path(sys.executable).parent / "perf_analyzer",
    ]
    for c in candidates:
        if c.exists():
            return c
    raise NativeServerError(
        "perf_analyzer not found next to the interpreter: install tritonclient[all]==2.50.0 "
        "(2.52+ need glibc 2.38, 2.61+ no longer ship it)"
    )


def perf_analyzer_env(staging: Path = STAGING, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for perf_analyzer: a lib dir with ``libb64.so.0d`` and ``libcudart.so.12`` symlinks."""
    libs = wheel_libs_dir()
    lib_dir = staging / "perf-lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    for soname, prefix in (("libb64.so.0d", "libb64-"), ("libcudart.so.12", "libcudart-")):
        matches = sorted(libs.glob(prefix + "*"))
        if not matches:
            raise NativeServerError(f"{prefix}*.so not found in {libs}; perf_analyzer needs it as {soname}")
        link = lib_dir / soname
        if link.is_symlink() or link.exists():
            if link.resolve() == matches[0].resolve():
                continue
            link.unlink()
        link.symlink_to(matches[0])
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(lib_dir), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


# ------------------------------------------------------------------------------------------------ inputs
def _text() -> str:
    return " ".join(read_sentences("corpus") + read_sentences("eval_sentences"))


def make_inputs(seq_lens: tuple[int, ...] = SEQ_LENS, count: int = SAMPLES) -> dict[int, np.ndarray]:
    """Realistic token ids of exactly each length: windows over the shipped corpus text ([CLS] ... [SEP])."""
    tok = Tokenizer(max_length=max(seq_lens))
    return {s: tok.fixed_length(_text(), s, count) for s in seq_lens}


def make_texts(seq_lens: tuple[int, ...] = SEQ_LENS, count: int = SAMPLES) -> dict[int, list[str]]:
    """The same corpus text as strings of whole words that tokenise to exactly each length."""
    tok = Tokenizer(max_length=max(seq_lens))
    return {s: tok.fixed_length_text(_text(), s, count) for s in seq_lens}


def write_text_inputs(texts_by_len: dict[int, list[str]], out_dir: Path) -> dict[int, Path]:
    """perf_analyzer ``--input-data`` JSON files for the text-in models (one string a request)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seq_len, texts in texts_by_len.items():
        data = [{TEXT_INPUT: {"content": [t], "shape": [1]}} for t in texts]
        path = out_dir / f"text-{seq_len}.json"
        path.write_text(json.dumps({"data": data}))
        paths[seq_len] = path
    return paths


def write_inputs(ids_by_len: dict[int, np.ndarray], out_dir: Path) -> dict[int, Path]:
    """perf_analyzer ``--input-data`` JSON files (one per length; shapes exclude the batch dimension)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seq_len, ids in ids_by_len.items():
        data = [
            {
                INPUT_NAMES[0]: {"content": row.tolist(), "shape": [seq_len]},
                INPUT_NAMES[1]: {"content": [1] * seq_len, "shape": [seq_len]},
            }
            for row in ids
        ]
        path = out_dir / f"inputs-{seq_len}.json"
        path.write_text(json.dumps({"data": data}))
        paths[seq_len] = path
    return paths


def parse_server_counts(stdout: str) -> dict[int, tuple[int, int]]:
    """concurrency -> (server inference count, execution count) from perf_analyzer's report."""
    out = {}
    for block in re.split(r"Request concurrency: ", stdout)[1:]:
        conc = int(block.split()[0])
        inf = re.search(r"Inference count: (\d+)", block)
        exe = re.search(r"Execution count: (\d+)", block)
        if inf and exe:
            out[conc] = (int(inf.group(1)), int(exe.group(1)))
    return out


def perf_analyzer_command(
    model: str,
    grpc_url: str,
    data: Path,
    concurrency: int,
    csv_path: Path,
    interval_ms: int,
    stability: int,
    max_trials: int,
) -> list[str]:
    """The perf_analyzer command line for one point (printed with ``-v`` so that users can rerun it)."""
    return [
        str(perf_analyzer_path()), "-m", model, "-u", grpc_url, "-i", "grpc",
        "--input-data", str(data), "-b", "1",
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(interval_ms),
        "--stability-percentage", str(stability), "--max-trials", str(max_trials),
        "-f", str(csv_path),
    ]  # fmt: skip


def run_point(
    model: str,
    grpc_url: str,
    data: Path,
    seq_len: int,
    concurrency: int,
    work: Path,
    interval_ms: int,
    stability: int,
    max_trials: int,
    timeout_s: float,
    verbose: bool = False,
) -> Point:
    """Measure one (form, length, concurrency) point; one retry with a looser stability criterion."""
    env = perf_analyzer_env()
    csv_path = work / f"{model}-seq{seq_len}-c{concurrency}.csv"
    last_error = ""
    # steady state first; on a loaded machine three windows rarely agree within 15 %, so retry looser
    for attempt, stab in enumerate(dict.fromkeys((stability, max(stability * 2, 50), 100))):
        cmd = perf_analyzer_command(
            model, grpc_url, data, concurrency, csv_path, interval_ms, stab, max_trials
        )
        if verbose:
            print("  $ " + " ".join(cmd), flush=True)
        csv_path.unlink(missing_ok=True)
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Point(model, seq_len, concurrency, 0, 0, 0, 0, 0, status=f"timeout {timeout_s:.0f}s")
        if r.returncode == 0 and csv_path.exists():
            row = next(csv.DictReader(csv_path.open()))
            counts = parse_server_counts(r.stdout).get(concurrency, (0, 0))
            return Point(
                model, seq_len, concurrency,
                throughput=float(row["Inferences/Second"]),
                p50_ms=float(row["p50 latency"]) / 1000, p95_ms=float(row["p95 latency"]) / 1000,
                p99_ms=float(row["p99 latency"]) / 1000,
                avg_server_batch=(counts[0] / counts[1]) if counts[1] else float("nan"),
                status="ok" if attempt == 0 else f"ok (stability {stab}%)",
            )  # fmt: skip
        lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.search(r"fail|error|unable|cannot", ln, re.I)]
        last_error = ((errors or lines or [f"exit {r.returncode}"])[-1])[:160]
    return Point(model, seq_len, concurrency, 0, 0, 0, 0, 0, status=f"failed: {last_error}")


# -------------------------------------------------------------------------------------------- in-process
def time_inprocess(
    runner, ids: np.ndarray, batch: int, seq_len: int, min_time_s: float = 1.0, min_iters: int = 5
) -> Point:
    """Throughput and latency of ``runner`` (in-process ONNX Runtime) on the same ids, ``batch`` at a time."""
    mask = np.ones_like(ids)
    runner(ids[:batch], mask[:batch])  # warm-up (first call allocates)
    lat = []
    start = time.perf_counter()
    i = 0
    while (time.perf_counter() - start < min_time_s or len(lat) < min_iters) and len(lat) < 10_000:
        rows = [(i * batch + k) % len(ids) for k in range(batch)]
        t0 = time.perf_counter()
        runner(ids[rows], mask[rows])
        lat.append(time.perf_counter() - t0)
        i += 1
    total = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return Point(
        "inprocess-ort", seq_len, batch, throughput=batch * len(lat) / total,
        p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)), avg_server_batch=float(batch),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- reports
def ratios(points: list[Point], form: str = "minilm_onnx") -> list[dict]:
    """Triton throughput of ``form`` / in-process throughput at batch 1 and at batch = concurrency."""
    inproc = {(p.seq_len, p.concurrency): p.throughput for p in points if p.form == "inprocess-ort"}
    out = []
    for p in points:
        if p.form != form or p.throughput <= 0:
            continue
        b1 = inproc.get((p.seq_len, 1))
        bc = inproc.get((p.seq_len, p.concurrency))
        out.append({
            "seq_len": p.seq_len, "concurrency": p.concurrency, "triton": p.throughput,
            "vs_batch1": p.throughput / b1 if b1 else float("nan"),
            "vs_same_batch": p.throughput / bc if bc else float("nan"),
            "avg_server_batch": p.avg_server_batch,
        })  # fmt: skip
    return out


def _ratio(x: float) -> str:
    """``1.23x``, or ``-`` where in-process was not timed at that batch size."""
    return "-" if x != x else f"{x:.2f}x"


def markdown(points: list[Point], header: str) -> str:
    """The perf table (every point) and the ratios table, as markdown."""
    lines = [header, "",
             "| form | seq | conc/batch | seq/s | p50 ms | p95 ms | p99 ms | server batch | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for p in sorted(points, key=lambda p: (p.seq_len, p.form != "inprocess-ort", p.form, p.concurrency)):
        lines.append(
            f"| {p.form.removeprefix('minilm_')} | {p.seq_len} | {p.concurrency} | {p.throughput:.1f} | "
            f"{p.p50_ms:.2f} | {p.p95_ms:.2f} | {p.p99_ms:.2f} | {p.avg_server_batch:.2f} | {p.status} |"
        )
    rs = ratios(points)
    if rs:
        lines += ["", "Triton `minilm_onnx` / in-process ONNX Runtime (fp32, same ids):", "",
                  "| seq | concurrency | Triton seq/s | vs in-process batch 1 "
                  "| vs in-process batch = concurrency "
                  "| server batch |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in rs:
            lines.append(
                f"| {r['seq_len']} | {r['concurrency']} | {r['triton']:.1f} | {_ratio(r['vs_batch1'])} | "
                f"{_ratio(r['vs_same_batch'])} | {r['avg_server_batch']:.2f} |"
            )
    costs = tokenization_cost(points)
    if costs:
        lines += ["", "Server-side tokenisation: `<form>_text` (strings in) beside `<form>` (ids in), same "
                  "lengths and concurrency:", "",
                  "| form | seq | concurrency | ids seq/s | text seq/s | text / ids | ids p50 ms "
                  "| text p50 ms | p50 added ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for c in costs:
            lines.append(
                f"| {c['form'].removeprefix('minilm_')} | {c['seq_len']} | {c['concurrency']} "
                f"| {c['ids']:.1f} | {c['text']:.1f} | {c['ratio']:.2f}x | {c['ids_p50']:.2f} "
                f"| {c['text_p50']:.2f} | {c['text_p50'] - c['ids_p50']:+.2f} |"
            )
    return "\n".join(lines)


def tokenization_cost(points: list[Point]) -> list[dict]:
    """Each text-in point beside the id-in point of the same form, length and concurrency."""
    ids = {(p.form, p.seq_len, p.concurrency): p for p in points if p.throughput > 0}
    out = []
    for p in points:
        base = ids.get((p.form.removesuffix(TEXT_SUFFIX), p.seq_len, p.concurrency))
        if not p.form.endswith(TEXT_SUFFIX) or p.throughput <= 0 or base is None:
            continue
        out.append({
            "form": base.form, "seq_len": p.seq_len, "concurrency": p.concurrency,
            "ids": base.throughput, "text": p.throughput, "ratio": p.throughput / base.throughput,
            "ids_p50": base.p50_ms, "text_p50": p.p50_ms,
        })  # fmt: skip
    return out


def compute_times(http: str, models: list[str]) -> dict[str, tuple[int, int, float]]:
    """model -> (executions, inferences, mean compute ms per execution) from Triton's statistics.

    Why: the ensemble's own numbers are per request; its steps' statistics say how long the tokenizer step
    itself computes next to the form, which machine noise moves far less than end-to-end throughput.
    """
    from tritonserving.native_server import http_get_json

    out = {}
    for model in models:
        status, stats = http_get_json(f"http://{http}/v2/models/{model}/stats", timeout=10)
        if status != 200 or not stats or not stats.get("model_stats"):
            continue
        s = stats["model_stats"][0]
        compute = s["inference_stats"]["compute_infer"]
        executions = int(s["execution_count"])
        mean_ms = float(compute["ns"]) / 1e6 / executions if executions else float("nan")
        out[model] = (executions, int(s["inference_count"]), mean_ms)
    return out


def compute_times_markdown(times: dict[str, tuple[int, int, float]]) -> str:
    """The server-side compute time table (ensembles have no compute of their own: left out)."""
    rows = [(m, t) for m, t in times.items() if not m.endswith(TEXT_SUFFIX)]
    lines = ["Server-side compute per execution over the whole run (Triton statistics; `tokenizer` is the "
             "text-in models' first step):", "",
             "| model | executions | inferences | mean compute ms per execution |",
             "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {m} | {e} | {i} | {ms:.2f} |" for m, (e, i, ms) in rows]
    return "\n".join(lines)


def plot(points: list[Point], png: Path) -> Path:
    """Throughput vs p95 latency, one panel per sequence length, one line per form (labels = concurrency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seqs = sorted({p.seq_len for p in points})
    fig, axes = plt.subplots(1, len(seqs), figsize=(5.2 * len(seqs), 4.4), squeeze=False)
    forms = sorted({p.form for p in points}, key=lambda f: (f == "inprocess-ort", f))
    for ax, seq in zip(axes[0], seqs, strict=True):
        for form in forms:
            pts = sorted((p for p in points if p.form == form and p.seq_len == seq and p.throughput > 0),
                         key=lambda p: p.concurrency)  # fmt: skip
            if not pts:
                continue
            style = {"linestyle": "--", "color": "black"} if form == "inprocess-ort" else {}
            label = "in-process ORT (x = batch)" if form == "inprocess-ort" else form.removeprefix("minilm_")
            ax.plot([p.p95_ms for p in pts], [p.throughput for p in pts], marker="o", label=label, **style)
            for p in pts:
                ax.annotate(str(p.concurrency), (p.p95_ms, p.throughput), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))  # fmt: skip
        ax.set_title(f"sequence length {seq}")
        ax.set_xlabel("p95 latency (ms)")
        ax.set_ylabel("throughput (sequences/s)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, "Native Triton (CPU, python backend), perf_analyzer; labels = concurrency", png)


def write_csv(points: list[Point], path: Path) -> None:
    """Every point, one row each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(points[0]).keys()))
        w.writeheader()
        for p in points:
            w.writerow(asdict(p))


# --------------------------------------------------------------------------------------------------- run
def parse_range(text: str) -> list[int]:
    """``1:8`` -> [1..8]; ``1,2,4`` -> [1, 2, 4]."""
    if ":" in text:
        lo, hi = (int(x) for x in text.split(":")[:2])
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",") if x]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``triton-serving perf``."""
    add_server_arguments(parser)
    parser.add_argument("--inputs", choices=["both", "ids", "text"], default="both",
                        help="measure each form (ids in), its text-in model, or both (default)")  # fmt: skip
    parser.add_argument("--seq-lens", default="16,64,128", help="sequence lengths (default 16,64,128)")
    parser.add_argument("--concurrency", default="1:8", help="concurrency levels, 1:8 or 1,2,4 (default 1:8)")
    parser.add_argument("--interval-ms", type=int, default=1000, help="perf_analyzer measurement window")
    parser.add_argument("--stability", type=int, default=15, help="perf_analyzer --stability-percentage")
    parser.add_argument("--max-trials", type=int, default=5, help="perf_analyzer --max-trials per point")
    parser.add_argument("--budget-s", type=float, default=900, help="stop measuring after this many seconds")
    parser.add_argument("--inprocess-batches", default="1,2,4,8", help="in-process ORT batch sizes")
    parser.add_argument("--no-inprocess", action="store_true", help="skip the in-process ONNX Runtime timing")
    parser.add_argument(
        "--out-dir", type=Path, default=artefact("perf"), help="output dir (default build/perf)"
    )
    parser.add_argument("--write-inputs-only", action="store_true",
                        help="only write build/perf/inputs-<seq>.json (for the compose sdk)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="print every perf_analyzer command")


def run(args: argparse.Namespace) -> int:
    """Measure; 0 = the table was written (even with failed points, which it lists), 2 = could not run."""
    t_start = time.monotonic()
    try:
        seq_lens = tuple(parse_range(args.seq_lens))
        concs = parse_range(args.concurrency)
        ids_by_len = make_inputs(seq_lens)
        data = write_inputs(ids_by_len, args.out_dir)
        text_data = write_text_inputs(make_texts(seq_lens), args.out_dir)
        if args.write_inputs_only:
            print(f"wrote {', '.join(str(p) for p in [*data.values(), *text_data.values()])}")
            return 0
        perf_analyzer_path()
        points: list[Point] = []
        batches = [] if args.no_inprocess else parse_range(args.inprocess_batches)
        runner = inprocess_runner() if batches else None
        work = args.out_dir / "raw"
        work.mkdir(parents=True, exist_ok=True)
        deadline = t_start + args.budget_s
        point_timeout = max(30.0, args.interval_ms / 1000 * args.max_trials * 4 + 20)
        interrupted = False
        with served_forms_at(args, args.out_dir) as (http, grpc, forms):
            models = models_to_measure(forms, args.inputs)
            from tqdm import tqdm

            bar = tqdm(total=len(seq_lens) * len(models) * len(concs), desc="perf_analyzer", unit="point",
                       file=sys.stdout)  # fmt: skip
            for seq in seq_lens:
                # in-process timed right before AND right after the Triton points of the same length: on a
                # shared machine the load changes by the minute, and the spread of the two shows how much
                before = [time_inprocess(runner, ids_by_len[seq], b, seq) for b in batches] if runner else []
                for form in models:
                    inputs = text_data if form.endswith(TEXT_SUFFIX) else data
                    for conc in concs:
                        bar.update(1)
                        if time.monotonic() > deadline or interrupted:
                            skipped = "skipped: interrupted" if interrupted else "skipped: --budget-s spent"
                            points.append(Point(form, seq, conc, 0, 0, 0, 0, 0, status=skipped))
                            continue
                        try:
                            points.append(run_point(
                                form, grpc, inputs[seq], seq, conc, work, args.interval_ms, args.stability,
                                args.max_trials, timeout_s=point_timeout, verbose=args.verbose,
                            ))  # fmt: skip
                        except KeyboardInterrupt:  # Ctrl-C: keep what was measured, write the table
                            interrupted = True
                            points.append(Point(form, seq, conc, 0, 0, 0, 0, 0, "skipped: interrupted"))
                after = before if interrupted or not runner else [
                    time_inprocess(runner, ids_by_len[seq], b, seq) for b in batches
                ]  # fmt: skip
                points += [merge_inprocess(a, b) for a, b in zip(before, after, strict=True)]
            bar.close()
            steps = [TOKENIZER_MODEL] if any(m.endswith(TEXT_SUFFIX) for m in models) else []
            server_times = compute_times(http, [*models, *steps])
    except (ClientError, NativeServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    header = (f"perf_analyzer (gRPC, batch 1 per request, concurrency {args.concurrency}, window "
              f"{args.interval_ms} ms, stability {args.stability}%) and in-process ONNX Runtime; "
              f"{time.monotonic() - t_start:.0f}s in all.")  # fmt: skip
    md = markdown(points, header) + "\n\n" + compute_times_markdown(server_times)
    print(md)
    write_csv(points, args.out_dir / "perf.csv")
    (args.out_dir / "perf.md").write_text(md + "\n")
    png = plot(points, args.out_dir / "perf.png")
    print(f"\nwrote {args.out_dir / 'perf.csv'}, perf.md and {png}")
    failed = [p for p in points if not p.status.startswith("ok")]
    if failed:
        print(f"{len(failed)} point(s) not measured; see the status column", file=sys.stderr)
    return 0


def models_to_measure(forms: list[str], inputs: str) -> list[str]:
    """The models perf_analyzer measures: each form (ids in), its text-in model, or both side by side."""
    out = []
    for form in forms:
        out += [form] if inputs in ("both", "ids") else []
        out += [text_model(form)] if inputs in ("both", "text") else []
    return out


def inprocess_runner():
    """In-process ONNX Runtime on the fp32 form, with the session options of the served python model.

    Why the same options: the ratio should measure what serving costs (IPC, queueing, batching), not a
    difference of thread settings; the export side's runner and the python-backend template both use
    ONNX Runtime's defaults.
    """
    from tritonserving.runners import load_form

    return load_form("fp32", build_dir=BUILD)


def merge_inprocess(before: Point, after: Point) -> Point:
    """One in-process point from the timings before and after the Triton points; the spread goes in status."""
    mean = (before.throughput + after.throughput) / 2
    spread = abs(before.throughput - after.throughput) / mean * 100 if mean else 0.0
    return Point(
        before.form, before.seq_len, before.concurrency, throughput=mean,
        p50_ms=(before.p50_ms + after.p50_ms) / 2, p95_ms=(before.p95_ms + after.p95_ms) / 2,
        p99_ms=(before.p99_ms + after.p99_ms) / 2, avg_server_batch=before.avg_server_batch,
        status=f"ok (before/after differ {spread:.0f}%)",
    )  # fmt: skip
