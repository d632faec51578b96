"""Offline drift report: how far apart the forms' embeddings are, all run in this process.

For every pair of forms (fp32, OpenVINO, fp16, int8, int8_trt and the original PyTorch sentence-transformers
model as ``torch``) on the shipped held-apart sentence set: the norm of the difference of the two embeddings
of each sentence (mean and max over sentences) and the cosine; against fp32 also the top-10 retrieval overlap
on the shipped corpus (50 passages) and queries (16): the share of fp32's top-10 passages a form also ranks
in its top-10. Embeddings are unit length, so a norm of difference d means cosine 1 - d^2/2.

Writes ``build/drift/drift.md`` (tables), ``drift.json`` and ``drift.png`` (heatmaps).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

DEFAULT_FORMS = ("torch", "fp32", "openvino", "fp16", "int8", "int8_trt")
TOP_K = 10


def torch_runner(build_dir: str | os.PathLike):
    """The reference: the original sentence-transformers model (PyTorch, fp32) on the same token ids."""
    import torch
    from sentence_transformers import SentenceTransformer

    from tritonserving.model_source import resolve_model

    model = SentenceTransformer(str(resolve_model(None)), device="cpu")
    model.eval()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            feats = {
                "input_ids": torch.from_numpy(np.asarray(ids, np.int64)),
                "attention_mask": torch.from_numpy(np.asarray(mask, np.int64)),
            }
            return model(feats)["sentence_embedding"].numpy().astype(np.float32)

    return run


def runner_for(name: str, build_dir: str | os.PathLike):
    """Runner of a form name (``torch`` or any key of ``forms.FORMS``)."""
    from tritonserving.forms import load_form

    return torch_runner(build_dir) if name == "torch" else load_form(name, build_dir)


def pair_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Norms of the row differences (mean, max) and cosine (mean, min) of two embedding matrices."""
    diff = np.linalg.norm(a - b, axis=1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "norm_mean": float(diff.mean()),
        "norm_max": float(diff.max()),
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
    }


def topk_overlap(q_ref: np.ndarray, c_ref: np.ndarray, q: np.ndarray, c: np.ndarray, k: int = TOP_K) -> float:
    """Mean share of the reference's top-k passages (per query) that the other form also puts in its top-k."""
    ref = np.argsort(-(q_ref @ c_ref.T), axis=1)[:, :k]
    got = np.argsort(-(q @ c.T), axis=1)[:, :k]
    return float(np.mean([len(set(r) & set(g)) / k for r, g in zip(ref, got, strict=True)]))


def compute(build_dir: str | os.PathLike = "build", forms: tuple[str, ...] = DEFAULT_FORMS) -> dict:
    """Embed the shipped sets with every form and return the full report as a dict."""
    from tqdm import tqdm

    from tritonserving.forms import batches_of, embed, read_sentences

    sentences = read_sentences("eval_sentences")
    sets = {
        "eval": batches_of(sentences, build_dir),
        "corpus": batches_of(read_sentences("corpus"), build_dir),
        "queries": batches_of(read_sentences("queries"), build_dir),
    }
    emb: dict[str, dict[str, np.ndarray]] = {}
    for name in tqdm(forms, desc="drift: embedding with each form", unit="form"):
        run = runner_for(name, build_dir)
        emb[name] = {key: embed(run, batches) for key, batches in sets.items()}
    matrix = {a: {b: pair_stats(emb[a]["eval"], emb[b]["eval"]) for b in forms} for a in forms}
    ref = "fp32" if "fp32" in forms else forms[0]
    retrieval = {
        name: topk_overlap(emb[ref]["queries"], emb[ref]["corpus"], emb[name]["queries"], emb[name]["corpus"])
        for name in forms
    }
    return {
        "forms": list(forms),
        "reference": ref,
        "n_sentences": len(sentences),
        "n_corpus": int(emb[ref]["corpus"].shape[0]),
        "n_queries": int(emb[ref]["queries"].shape[0]),
        "matrix": matrix,
        "top10_overlap": retrieval,
    }


def to_markdown(report: dict) -> str:
    """The report as markdown tables (norm mean / norm max matrices, then the per-form summary)."""
    forms, ref = report["forms"], report["reference"]
    m = report["matrix"]

    def table(key: str, fmt: str) -> list[str]:
        rows = ["| | " + " | ".join(forms) + " |", "| --- |" + " ---: |" * len(forms)]
        rows += [f"| **{a}** | " + " | ".join(format(m[a][b][key], fmt) for b in forms) + " |" for a in forms]
        return rows

    lines = [
        f"Held-apart set: {report['n_sentences']} sentences; retrieval: {report['n_queries']} queries "
        f"over {report['n_corpus']} passages. Norms: of embedding differences (unit vectors).",
        "",
        "Mean norm of the difference, forms x forms:",
        "",
        *table("norm_mean", ".2e"),
        "",
        "Max norm of the difference, forms x forms:",
        "",
        *table("norm_max", ".2e"),
        "",
        f"Against {ref}:",
        "",
        f"| form | norm mean | norm max | cosine mean | cosine min | top-{TOP_K} overlap with {ref} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in forms:
        s = m[ref][name]
        lines.append(
            f"| {name} | {s['norm_mean']:.2e} | {s['norm_max']:.2e} | {s['cos_mean']:.6f} | "
            f"{s['cos_min']:.6f} | {report['top10_overlap'][name]:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | os.PathLike) -> Path:
    """Two heatmaps (mean and max norm of differences, log colour scale) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    forms = report["forms"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, key, title in zip(axes, ("norm_mean", "norm_max"), ("mean", "max"), strict=True):
        data = np.array([[report["matrix"][a][b][key] for b in forms] for a in forms])
        shown = np.where(data > 0, data, np.nan)
        positive = data[data > 0]
        norm = LogNorm(vmin=max(positive.min(), 1e-8), vmax=positive.max()) if positive.size else None
        im = ax.imshow(shown, cmap="viridis", norm=norm)
        ax.set_xticks(range(len(forms)), forms, rotation=35, ha="right")
        ax.set_yticks(range(len(forms)), forms)
        for i in range(len(forms)):
            for j in range(len(forms)):
                bright = data[i, j] == 0 or (norm is not None and norm(data[i, j]) > 0.6)
                ax.text(
                    j,
                    i,
                    "0" if data[i, j] == 0 else f"{data[i, j]:.1e}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if bright else "white",
                )
        ax.set_title(f"{title} ||e_a - e_b|| over {report['n_sentences']} sentences")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("all-MiniLM-L6-v2 forms: drift of the embeddings (in-process, CPU)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(build_dir: str | os.PathLike = "build", forms: tuple[str, ...] = DEFAULT_FORMS) -> Path:
    """Compute and write ``build/drift/{drift.md,drift.json,drift.png}``; returns the markdown path."""
    out = Path(build_dir) / "drift"
    out.mkdir(parents=True, exist_ok=True)
    report = compute(build_dir, forms)
    (out / "drift.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "drift.png")
    md = out / "drift.md"
    md.write_text(to_markdown(report))
    return md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments of ``triton-serving drift``."""
    parser.add_argument("--build-dir", default="build", help="output root (default: build)")
    parser.add_argument(
        "--forms",
        default=",".join(DEFAULT_FORMS),
        help=f"comma-separated forms (default: {','.join(DEFAULT_FORMS)})",
    )


def run(args: argparse.Namespace) -> int:
    """``triton-serving drift``: write and print the report."""
    forms = tuple(f.strip() for f in args.forms.split(",") if f.strip())
    from tritonserving.forms import FORMS

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
