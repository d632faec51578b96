"""Offline drift report: right on known inputs; the real report has the expected structure and values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tritonserving import drift
from tritonserving.forms import FORMS

FOLDER = Path(__file__).resolve().parents[1]
BUILD = FOLDER / "build"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pair_stats_on_known_vectors() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    b = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    s = drift.pair_stats(a, b)
    assert s["norm_max"] == pytest.approx(np.sqrt(2.0))
    assert s["norm_mean"] == pytest.approx(np.sqrt(2.0) / 2)
    assert s["cos_mean"] == pytest.approx(0.5) and s["cos_min"] == pytest.approx(0.0)
    assert drift.pair_stats(a, a) == {"norm_mean": 0.0, "norm_max": 0.0, "cos_mean": 1.0, "cos_min": 1.0}


def test_topk_overlap_on_known_rankings() -> None:
    rng = np.random.default_rng(0)
    corpus = _unit(rng.normal(size=(30, 8)))
    queries = _unit(rng.normal(size=(4, 8)))
    assert drift.topk_overlap(queries, corpus, queries, corpus) == 1.0
    # a tiny perturbation keeps the ranking
    assert drift.topk_overlap(queries, corpus, queries, corpus + 1e-7) == 1.0
    # negated queries rank the passages the other way round: the top-10 of 30 cannot overlap
    assert drift.topk_overlap(queries, corpus, -queries, corpus) == 0.0


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
    m = data["matrix"]
    for a in forms:
        assert m[a][a]["norm_max"] == 0.0
        for b in forms:
            assert m[a][b]["norm_mean"] == pytest.approx(m[b][a]["norm_mean"])  # symmetric
    png = report["dir"] / "drift.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "| **int8_trt** |" in report["md"] and "top-10 overlap" in report["md"]


def test_forms_drift_within_their_budgets(report) -> None:
    """Full-precision forms agree to ~1e-5; fp16 to ~1e-2; int8 keeps the retrieval ranking mostly intact."""
    m, top = report["json"]["matrix"]["fp32"], report["json"]["top10_overlap"]
    for name in ("torch", "openvino"):
        assert m[name]["norm_max"] <= 1e-5 and top[name] == 1.0
    assert m["fp16"]["norm_max"] <= 1e-2 and top["fp16"] >= 0.99
    for name in ("int8", "int8_trt"):
        assert m[name]["cos_mean"] >= 0.995 and m[name]["cos_min"] >= 0.98
        assert top[name] >= 0.9


def test_unknown_form_is_a_clear_error(capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    drift.add_arguments(parser)
    assert drift.run(parser.parse_args(["--forms", "fp32,bogus"])) == 2
    assert capsys.readouterr().out.strip() == "error: unknown form(s) bogus; choose from torch, " + ", ".join(
        FORMS
    )
