"""Offline drift report: right on known inputs; the real report has the expected structure and values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tritonserving import drift
from tritonserving.comparison import STATS, pair_stats, topk, topk_overlap
from tritonserving.runners import FORMS

FOLDER = Path(__file__).resolve().parents[1]
BUILD = FOLDER / "build"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pair_stats_on_known_vectors() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    b = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    s = pair_stats(a, b)
    assert s["max_norm"] == pytest.approx(np.sqrt(2.0))
    assert s["mean_norm"] == pytest.approx(np.sqrt(2.0) / 2)
    assert s["mean_cos"] == pytest.approx(0.5) and s["min_cos"] == pytest.approx(0.0)
    assert pair_stats(a, a) == {"mean_norm": 0.0, "max_norm": 0.0, "mean_cos": 1.0, "min_cos": 1.0}


def test_topk_overlap_on_known_rankings() -> None:
    rng = np.random.default_rng(0)
    corpus = _unit(rng.normal(size=(30, 8)))
    queries = _unit(rng.normal(size=(4, 8)))
    ref = topk(queries, corpus, 10)
    assert topk_overlap(ref, topk(queries, corpus, 10)) == 1.0
    # a tiny perturbation keeps the ranking
    assert topk_overlap(ref, topk(queries, corpus + 1e-7, 10)) == 1.0
    # negated queries rank the passages the other way round: the top-10 of 30 cannot overlap
    assert topk_overlap(ref, topk(-queries, corpus, 10)) == 0.0


@pytest.fixture(scope="module")
def report() -> dict:
    from tritonserving.export import ensure_all

    ensure_all(BUILD)
    md = drift.write_report(BUILD)
    return {"md": md.read_text(), "json": json.loads(md.with_suffix(".json").read_text()), "dir": md.parent}


def test_report_files_and_matrix(report) -> None:
    data = report["json"]
    forms = data["forms"]
    assert forms == list(drift.DEFAULT_FORMS)
    m = np.array(data["max_norm"])
    assert (np.diag(m) == 0.0).all()
    np.testing.assert_allclose(m, m.T, rtol=1e-9)  # symmetric
    png = report["dir"] / "drift.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "| **int8_trt** |" in report["md"] and "top-10 overlap" in report["md"]
    assert data["n_sentences"] == 86 and data["n_queries"] == 16 and data["n_corpus"] == 50


def test_forms_drift_within_their_budgets(report) -> None:
    """Full-precision forms agree to ~1e-5; fp16 to ~1e-2; int8 keeps the retrieval ranking mostly intact."""
    data = report["json"]
    r = data["forms"].index(data["reference"])
    m = {f: {s: data[s][r][j] for s in STATS} for j, f in enumerate(data["forms"])}
    for name in ("torch", "openvino"):
        assert m[name]["max_norm"] <= 1e-5 and m[name]["topk_overlap"] == 1.0
    assert m["fp16"]["max_norm"] <= 1e-2 and m["fp16"]["topk_overlap"] >= 0.99
    for name in ("int8", "int8_trt"):
        assert m[name]["mean_cos"] >= 0.995 and m[name]["min_cos"] >= 0.98
        assert m[name]["topk_overlap"] >= 0.9


def test_unknown_form_is_a_clear_error(capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    drift.add_arguments(parser)
    assert drift.run(parser.parse_args(["--forms", "fp32,bogus"])) == 2
    assert capsys.readouterr().out.strip() == "error: unknown form(s) bogus; choose from torch, " + ", ".join(
        FORMS
    )
