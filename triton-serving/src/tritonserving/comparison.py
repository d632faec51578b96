"""Forms x forms comparison of embeddings: statistics, markdown tables, heatmaps.

One implementation for both reports: ``drift`` (every form run in this process) and ``compare_served``
(``triton-compare``: the forms as a Triton server serves them). Given each form's embeddings of the same
sentences (same row order), it computes for every pair of forms

* the norm of the embedding difference ``||e_a - e_b||`` per sentence (mean and max),
* the cosine per sentence (mean and min),
* top-k retrieval overlap: queries against a corpus, each form embedding both; ``|top_a & top_b| / k``
  averaged over the queries.

Embeddings are unit length, so a norm of difference d means cosine 1 - d^2/2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tritonserving.figures import save_figure

STATS = ("mean_norm", "max_norm", "mean_cos", "min_cos", "topk_overlap")


class ComparisonError(ValueError):
    """Embeddings that cannot be compared (one line)."""


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows left as they are), in float64."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def pair_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Norms of the row differences (mean, max) and cosines (mean, min) of two embedding matrices."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ComparisonError(f"embeddings of shapes {a.shape} and {b.shape} cannot be compared row by row")
    norms = np.linalg.norm(a - b, axis=1)
    cos = np.sum(unit(a) * unit(b), axis=1)
    return {
        "mean_norm": float(norms.mean()),
        "max_norm": float(norms.max()),
        "mean_cos": float(cos.mean()),
        "min_cos": float(cos.min()),
    }


def topk(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` corpus rows most cosine-similar to each query row (best first)."""
    sims = unit(queries) @ unit(corpus).T
    k = min(k, corpus.shape[0])
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def topk_overlap(top_a: np.ndarray, top_b: np.ndarray) -> float:
    """Mean share of ``top_a``'s rows (per query) that ``top_b`` also holds."""
    k = top_a.shape[1]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b, strict=True)]))


@dataclass
class Comparison:
    """All pairwise statistics between forms (square matrices indexed like ``forms``)."""

    forms: list[str]
    mean_norm: np.ndarray
    max_norm: np.ndarray
    mean_cos: np.ndarray
    min_cos: np.ndarray
    topk_overlap: np.ndarray
    k: int = 10
    n_sentences: int = 0
    n_queries: int = 0
    n_corpus: int = 0
    protocol_diff: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "forms": self.forms,
            "k": self.k,
            "n_sentences": self.n_sentences,
            "n_queries": self.n_queries,
            "n_corpus": self.n_corpus,
            **{name: getattr(self, name).round(9).tolist() for name in STATS},
            "protocol_max_abs_diff": self.protocol_diff,
        }

    def against(self, reference: str) -> dict[str, dict[str, float]]:
        """Every form's statistics against ``reference``: ``{form: {stat: value}}``."""
        r = self.forms.index(reference)
        return {f: {s: float(getattr(self, s)[r, j]) for s in STATS} for j, f in enumerate(self.forms)}


def compare_embeddings(
    sentences: dict[str, np.ndarray],
    queries: dict[str, np.ndarray],
    corpus: dict[str, np.ndarray],
    k: int = 10,
) -> Comparison:
    """Forms x forms statistics from each form's embeddings (same row order for every form).

    ``sentences[f]`` [N, D] gives the norm and cosine matrices; ``queries[f]`` [Q, D] against ``corpus[f]``
    [C, D] gives the top-k retrieval overlap.
    """
    forms = list(sentences)
    n = len(forms)
    mats = {name: np.zeros((n, n)) for name in STATS}
    tops = {f: topk(queries[f], corpus[f], k) for f in forms}
    for i, a in enumerate(forms):
        for j, b in enumerate(forms):
            try:
                stats = pair_stats(sentences[a], sentences[b])
            except ComparisonError as e:
                raise ComparisonError(f"{a} vs {b}: {e}") from None
            stats["topk_overlap"] = topk_overlap(tops[a], tops[b])
            for name, value in stats.items():
                mats[name][i, j] = value
    first = forms[0]
    return Comparison(
        forms=forms,
        k=k,
        n_sentences=len(sentences[first]),
        n_queries=len(queries[first]),
        n_corpus=len(corpus[first]),
        **mats,
    )


# -------------------------------------------------------------------------------------------- tables
def short_name(form: str) -> str:
    """Served model names without their common ``minilm_`` prefix, for narrow tables."""
    return form.removeprefix("minilm_")


def format_matrix(title: str, forms: list[str], mat: np.ndarray, fmt: str) -> str:
    """A forms x forms matrix as a markdown table."""
    names = [short_name(f) for f in forms]
    lines = [f"**{title}**", "", "| | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for name, row in zip(names, mat, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(format(v, fmt) for v in row) + " |")
    return "\n".join(lines)


def report_markdown(cmp: Comparison, reference: str) -> str:
    """The whole comparison as markdown: the forms x forms matrices, then every form against ``reference``."""
    parts = [
        f"{cmp.n_sentences} held-apart sentences; retrieval: {cmp.n_queries} queries over {cmp.n_corpus} "
        f"passages, top-{cmp.k}. Norms are of embedding differences (unit vectors).",
        "",
        format_matrix("mean ||e_a - e_b||", cmp.forms, cmp.mean_norm, ".2e"),
        "",
        format_matrix("max ||e_a - e_b||", cmp.forms, cmp.max_norm, ".2e"),
        "",
        format_matrix("min cosine", cmp.forms, cmp.min_cos, ".6f"),
        "",
        format_matrix(f"top-{cmp.k} retrieval overlap", cmp.forms, cmp.topk_overlap, ".3f"),
        "",
        f"**against {short_name(reference)}**",
        "",
        f"| form | mean norm | max norm | mean cosine | min cosine | top-{cmp.k} overlap |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for form, s in cmp.against(reference).items():
        parts.append(
            f"| {short_name(form)} | {s['mean_norm']:.2e} | {s['max_norm']:.2e} | {s['mean_cos']:.6f} | "
            f"{s['min_cos']:.6f} | {s['topk_overlap']:.3f} |"
        )
    if cmp.protocol_diff:
        parts += [
            "",
            "gRPC vs HTTP, max |difference| per form: "
            + ", ".join(f"{short_name(f)} {d:.2g}" for f, d in cmp.protocol_diff.items()),
        ]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- heatmaps
def plot_heatmaps(cmp: Comparison, png: Path, title: str) -> Path:
    """Four heatmaps (mean/max norm of differences on a log scale, min cosine, top-k overlap) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    names = [short_name(f) for f in cmp.forms]
    panels = [
        ("mean ||e_a - e_b||", cmp.mean_norm, "magma_r", ".1e", True),
        ("max ||e_a - e_b||", cmp.max_norm, "magma_r", ".1e", True),
        ("min cosine", cmp.min_cos, "viridis", ".4f", False),
        (f"top-{cmp.k} retrieval overlap", cmp.topk_overlap, "viridis", ".2f", False),
    ]
    n = len(names)
    fig, axes = plt.subplots(2, 2, figsize=(4.0 + 1.8 * n, 3.2 + 1.5 * n))
    for ax, (panel, mat, cmap, fmt, log) in zip(axes.ravel(), panels, strict=True):
        positive = mat[mat > 0]
        norm = LogNorm(vmin=max(positive.min(), 1e-9), vmax=positive.max()) if log and positive.size else None
        im = ax.imshow(np.where(mat > 0, mat, np.nan) if norm else mat, cmap=cmap, norm=norm)
        ax.set_xticks(range(n), names, rotation=30, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_title(panel)
        for i in range(n):
            for j in range(n):
                text = "0" if log and mat[i, j] == 0 else format(mat[i, j], fmt)
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="grey")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, title, png)
