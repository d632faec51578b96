"""Offline drift report: how far apart the forms' embeddings are, all run in this process.

Every pair of forms (fp32, OpenVINO, fp16, int8, int8_trt and the original PyTorch sentence-transformers
model as ``torch``) compared on the shipped held-apart sentences and on top-10 retrieval over the shipped
corpus and queries, with the statistics, tables and heatmaps of ``comparison`` (the served comparison,
``triton-compare``, uses the same).

Writes ``build/drift/drift.md`` (tables), ``drift.json`` and ``drift.png`` (heatmaps).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tritonserving.comparison import Comparison, compare_embeddings, plot_heatmaps, report_markdown
from tritonserving.data import BUILD, artefact

DEFAULT_FORMS = ("torch", "fp32", "openvino", "fp16", "int8", "int8_trt")
REFERENCE = "fp32"
SETS = ("eval_sentences", "queries", "corpus")
TOP_K = 10


def runner_for(name: str, build_dir: str | os.PathLike):
    """Runner of a form name (``torch`` or any key of ``runners.FORMS``)."""
    from tritonserving.runners import load_form, torch_runner

    return torch_runner() if name == "torch" else load_form(name, build_dir)


def embed_sets(run, build_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """One form's embeddings of the three shipped sets (batches of 16, padded per batch)."""
    from tritonserving.data import batches_of, read_sentences
    from tritonserving.runners import embed

    return {name: embed(run, batches_of(read_sentences(name), build_dir)) for name in SETS}


def compute(build_dir: str | os.PathLike = BUILD, forms: tuple[str, ...] = DEFAULT_FORMS) -> Comparison:
    """Embed the shipped sets with every form and compare them all."""
    from tqdm import tqdm

    emb: dict[str, dict[str, np.ndarray]] = {name: {} for name in SETS}
    for form in tqdm(forms, desc="drift: embedding with each form", unit="form"):
        for name, values in embed_sets(runner_for(form, build_dir), build_dir).items():
            emb[name][form] = values
    return compare_embeddings(emb["eval_sentences"], emb["queries"], emb["corpus"], k=TOP_K)


def write_report(build_dir: str | os.PathLike = BUILD, forms: tuple[str, ...] = DEFAULT_FORMS) -> Path:
    """Compute and write ``build/drift/{drift.md,drift.json,drift.png}``; returns the markdown path."""
    out = artefact("drift", build_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmp = compute(build_dir, forms)
    reference = REFERENCE if REFERENCE in forms else forms[0]
    (out / "drift.json").write_text(json.dumps({**cmp.to_json(), "reference": reference}, indent=1))
    plot_heatmaps(cmp, out / "drift.png", "all-MiniLM-L6-v2 forms in process (CPU): drift of the embeddings")
    md = out / "drift.md"
    md.write_text(report_markdown(cmp, reference) + "\n")
    return md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments of ``triton-serving drift``."""
    parser.add_argument("--build-dir", type=Path, default=BUILD, help=f"output root (default: {BUILD})")
    parser.add_argument(
        "--forms",
        default=",".join(DEFAULT_FORMS),
        help=f"comma-separated forms (default: {','.join(DEFAULT_FORMS)})",
    )


def run(args: argparse.Namespace) -> int:
    """``triton-serving drift``: write and print the report."""
    forms = tuple(f.strip() for f in args.forms.split(",") if f.strip())
    from tritonserving.runners import FORMS

    unknown = [f for f in forms if f != "torch" and f not in FORMS]
    if unknown:
        print(f"error: unknown form(s) {', '.join(unknown)}; choose from torch, {', '.join(FORMS)}")
        return 2
    try:
        md = write_report(args.build_dir, forms)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    print(md.read_text())
    print(f"written: {md}, {md.with_suffix('.json')}, {md.with_suffix('.png')}")
    return 0
