"""``triton-compare``: send the same sentences to every form a Triton server serves, compare the embeddings.

Why: fp16 and int8 forms are only worth serving if their embeddings stay where fp32 puts them. This client
asks the real server through ``Embedder`` (gRPC and HTTP, the same sentences), prints the forms x forms
tables of ``comparison`` (norms of embedding differences, cosine, top-10 retrieval overlap), writes a PNG
heatmap, and exits 1 if a form drifts beyond the thresholds of a config file (defaults: mean cosine >= 0.995
and min >= 0.98 to fp32 for the reduced-precision forms). Exit 2 means the comparison could not run (server
unreachable, no forms...), with one line saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tritonserving.client import INPUTS, ClientError, Embedder
from tritonserving.comparison import (
    Comparison,
    ComparisonError,
    compare_embeddings,
    plot_heatmaps,
    report_markdown,
)
from tritonserving.data import (
    DEFAULT_MAX_LENGTH,
    DataError,
    artefact,
    read_lines,
    read_sentences,
    source_folder,
)
from tritonserving.native_server import NativeServerError, add_server_arguments, served_forms_at

THRESHOLDS_FILE = "drift-thresholds.json"
DEFAULT_CONFIG = (source_folder() or Path.cwd()) / THRESHOLDS_FILE
SETS = ("eval_sentences", "queries", "corpus")
#: used when no config file exists; a config file overrides key by key
BUILTIN_THRESHOLDS: dict = {
    "reference": "minilm_onnx",
    # full-precision forms (OpenVINO, TensorRT fp32) must agree with ONNX Runtime fp32 almost exactly
    "default": {"min_mean_cosine": 0.9999, "min_min_cosine": 0.999, "min_topk_overlap": 0.95},
    # reduced precision: mean cosine >= 0.995, min >= 0.98 to fp32
    "by_substring": {
        "fp16": {"min_mean_cosine": 0.995, "min_min_cosine": 0.98, "min_topk_overlap": None},
        "int8": {"min_mean_cosine": 0.995, "min_min_cosine": 0.98, "min_topk_overlap": None},
    },
    "forms": {},
    # gRPC and HTTP must return the same numbers for the same batch
    "max_protocol_abs_diff": 1e-6,
}


# ------------------------------------------------------------------------------------------- thresholds
def load_thresholds(path: Path | None) -> dict:
    """Built-in thresholds, overridden key by key by the JSON config file (if it exists)."""
    cfg = json.loads(json.dumps(BUILTIN_THRESHOLDS))
    if path is None:
        return cfg
    path = Path(path)
    if not path.exists():
        raise ClientError(f"threshold config {path} does not exist")
    try:
        user = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ClientError(f"threshold config {path} is not valid JSON: {e}") from None
    for key, value in user.items():
        if key.startswith("_"):
            continue  # comments
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def limits_for(form: str, cfg: dict) -> dict:
    """The thresholds that apply to ``form``: default < by_substring match < explicit per-form entry."""
    lim = dict(cfg.get("default", {}))
    for sub, extra in cfg.get("by_substring", {}).items():
        if sub in form:
            lim.update(extra)
    lim.update(cfg.get("forms", {}).get(form, {}))
    return lim


def check_drift(cmp: Comparison, cfg: dict) -> list[str]:
    """Human-readable violations (empty list = every form within its limits against the reference)."""
    ref = cfg.get("reference", "minilm_onnx")
    if ref not in cmp.forms:
        return [f"reference form {ref!r} is not served (forms: {', '.join(cmp.forms)})"]
    r = cmp.forms.index(ref)
    bad = []
    for j, form in enumerate(cmp.forms):
        if form == ref:
            continue
        lim = limits_for(form, cfg)
        checks = [
            ("min_mean_cosine", cmp.mean_cos[r, j], ">="),
            ("min_min_cosine", cmp.min_cos[r, j], ">="),
            ("min_topk_overlap", cmp.topk_overlap[r, j], ">="),
            ("max_mean_norm", cmp.mean_norm[r, j], "<="),
            ("max_max_norm", cmp.max_norm[r, j], "<="),
        ]
        for key, value, op in checks:
            limit = lim.get(key)
            if limit is None:
                continue
            ok = value >= limit if op == ">=" else value <= limit
            if not ok:
                bad.append(f"{form}: {key.split('_', 1)[1]} = {value:.5f}, limit {op} {limit}")
    limit = cfg.get("max_protocol_abs_diff")
    for form, diff in cmp.protocol_diff.items():
        if limit is not None and diff > limit:
            bad.append(f"{form}: gRPC and HTTP differ by {diff:.3g} > {limit}")
    return bad


# -------------------------------------------------------------------------------------------------- run
def collect(
    urls: dict[str, str],
    forms: list[str],
    sets: dict[str, list[str]],
    max_length: int = DEFAULT_MAX_LENGTH,
    inputs: str = "text",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Embeddings of every sentence set from every form (first protocol), and the protocols' max difference.

    ``urls`` maps a protocol to its ``host:port``, in the order they are asked; ``inputs`` is what the
    client sends (``Embedder``: ``text`` or ``ids``).
    """
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in sets}
    proto_diff: dict[str, float] = {}
    for form in forms:
        for protocol, url in urls.items():
            with Embedder(url, form, protocol, inputs=inputs, max_length=max_length) as embedder:
                for name, sentences in sets.items():
                    got = embedder.embed(sentences)
                    first = out[name].setdefault(form, got)
                    if first is not got:
                        diff = float(np.max(np.abs(first - got)))
                        proto_diff[form] = max(proto_diff.get(form, 0.0), diff)
    return out, proto_diff


def served_comparison(
    urls: dict[str, str], forms: list[str], sets: dict[str, list[str]], max_length: int, k: int, inputs: str
) -> Comparison:
    """Every form of ``forms`` as served, compared forms x forms."""
    emb, proto_diff = collect(urls, forms, sets, max_length, inputs)
    cmp = compare_embeddings(emb["eval_sentences"], emb["queries"], emb["corpus"], k=k)
    if len(urls) > 1:
        cmp.protocol_diff = proto_diff
    return cmp


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``triton-compare``."""
    add_server_arguments(parser)
    parser.add_argument(
        "--protocol",
        choices=["both", "grpc", "http"],
        default="both",
        help="send the batch over gRPC, HTTP or both (default both, and check they agree)",
    )
    parser.add_argument(
        "--inputs",
        choices=INPUTS,
        default="text",
        help="send strings to each form's text-in model (default; the server tokenises) or token ids to "
        "the form itself (the client tokenises with the export's tokenizer)",
    )
    parser.add_argument(
        "--sentences",
        type=Path,
        default=None,
        help="text file, one sentence a line (default: the shipped held-apart set)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None,
        help=f"threshold config JSON (default: {DEFAULT_CONFIG.name} if present, else built-in)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help=f"with --inputs ids: truncate sentences to this many tokens (default {DEFAULT_MAX_LENGTH}; "
        "the server's tokenizer truncates at 256)",
    )
    parser.add_argument("-k", type=int, default=10, help="top-k for retrieval overlap (default 10)")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=artefact("compare"),
        help="where compare.md, compare.json and compare.png go (default build/compare)",
    )
    parser.add_argument("--no-fail", action="store_true", help="report drift but exit 0")


def run(args: argparse.Namespace) -> int:
    """Compare the forms; 0 = all within limits, 1 = drift beyond limits, 2 = could not run."""
    try:
        cfg = load_thresholds(args.config)
        sets = {name: read_sentences(name) for name in SETS}
        if args.sentences:
            sets["eval_sentences"] = read_lines(args.sentences)
        t0 = time.perf_counter()
        with served_forms_at(args, args.out_dir) as (http, grpc, forms):
            urls = {"grpc": grpc, "http": http}
            urls = urls if args.protocol == "both" else {args.protocol: urls[args.protocol]}
            print(
                f"comparing {len(forms)} forms at {http} over {'+'.join(urls)}, {args.inputs} in: "
                f"{', '.join(forms)}",
                flush=True,
            )
            cmp = served_comparison(urls, forms, sets, args.max_length, args.k, args.inputs)
    except (ClientError, ComparisonError, DataError, NativeServerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    reference = cfg.get("reference", "minilm_onnx")
    md = report_markdown(cmp, reference if reference in cmp.forms else cmp.forms[0])
    print(md)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "compare.md").write_text(md + "\n")
    (args.out_dir / "compare.json").write_text(json.dumps(cmp.to_json(), indent=1))
    png = plot_heatmaps(
        cmp, args.out_dir / "compare.png", "Triton forms compared on the same sentences (served)"
    )
    print(f"\nwrote {args.out_dir / 'compare.md'}, compare.json and {png} ({time.perf_counter() - t0:.1f}s)")
    bad = check_drift(cmp, cfg)
    if bad:
        print("DRIFT beyond limits:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 0 if args.no_fail else 1
    print(f"every form within its limits against {reference}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``triton-compare``."""
    parser = argparse.ArgumentParser(
        prog="triton-compare",
        description="Send the same sentences to every MiniLM form a Triton server serves (gRPC and HTTP) and "
        "print forms x forms norms of embedding differences, cosine and top-10 retrieval overlap; exits 1 "
        "when "
        "a form drifts beyond the thresholds of --config.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
