"""triton-compare: matrices on inputs with known answers, the thresholds, and a run against the server."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from tritonserving import compare_served as cm
from tritonserving.client import ClientError
from tritonserving.comparison import compare_embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def known() -> dict:
    """Three forms: ``same`` = ``ref``; ``tilted`` = every vector turned by a known angle, and its queries
    negated, so that its top-10 of 12 corpus rows is the reference's bottom-10 (8 rows shared)."""
    rng = np.random.default_rng(0)
    ref = _unit(rng.normal(size=(20, 16)))
    ortho = rng.normal(size=(20, 16))
    ortho -= np.sum(ortho * ref, axis=1, keepdims=True) * ref  # orthogonal to each ref row
    eps = 0.1
    tilted = _unit(ref + eps * _unit(ortho))
    queries = _unit(rng.normal(size=(5, 16)))
    corpus = _unit(rng.normal(size=(12, 16)))
    sentences = {"ref": ref, "same": ref.copy(), "tilted": tilted}
    qs = {"ref": queries, "same": queries, "tilted": -queries}
    cs = {name: corpus for name in sentences}
    return {"cmp": compare_embeddings(sentences, qs, cs, k=10), "eps": eps}


def test_known_norms_and_cosines(known) -> None:
    c, eps = known["cmp"], known["eps"]
    cos = 1 / np.sqrt(1 + eps**2)
    norm = np.sqrt(2 - 2 * cos)
    assert c.forms == ["ref", "same", "tilted"]
    np.testing.assert_allclose(np.diag(c.mean_norm), 0, atol=1e-12)
    np.testing.assert_allclose(c.mean_norm[0, 1], 0, atol=1e-12)
    np.testing.assert_allclose(c.mean_cos[0, 1], 1, atol=1e-12)
    for mat, value in ((c.mean_norm, norm), (c.max_norm, norm), (c.mean_cos, cos), (c.min_cos, cos)):
        np.testing.assert_allclose(mat[0, 2], value, rtol=1e-9)
        np.testing.assert_allclose(mat, mat.T, rtol=1e-12)  # symmetric


def test_known_topk_overlap(known) -> None:
    c = known["cmp"]
    assert c.topk_overlap[0, 1] == 1.0
    assert c.topk_overlap[0, 2] == pytest.approx(8 / 10)  # top-10 and bottom-10 of 12 share 8
    np.testing.assert_allclose(np.diag(c.topk_overlap), 1.0)


def test_thresholds_defaults_and_overrides(tmp_path, known) -> None:
    cfg = cm.load_thresholds(None)
    assert cm.limits_for("minilm_trt_int8", cfg)["min_min_cosine"] == 0.98
    assert cm.limits_for("minilm_onnx_fp16", cfg)["min_mean_cosine"] == 0.995
    assert cm.limits_for("minilm_openvino", cfg)["min_mean_cosine"] > 0.995
    cfg["reference"] = "ref"
    bad = cm.check_drift(known["cmp"], cfg)
    assert any(b.startswith("tilted:") for b in bad) and not any(b.startswith("same:") for b in bad)
    path = tmp_path / "t.json"
    loose = {"min_mean_cosine": 0.99, "min_min_cosine": 0.99, "min_topk_overlap": 0.5}
    path.write_text(json.dumps({"reference": "ref", "default": loose}))
    assert cm.check_drift(known["cmp"], cm.load_thresholds(path)) == []
    path.write_text("{not json")
    with pytest.raises(ClientError, match="not valid JSON"):
        cm.load_thresholds(path)
    with pytest.raises(ClientError, match="does not exist"):
        cm.load_thresholds(tmp_path / "missing.json")


def test_shipped_config_equals_builtin_defaults() -> None:
    shipped = cm.load_thresholds(cm.DEFAULT_CONFIG)
    shipped.pop("_comment", None)
    assert shipped == cm.BUILTIN_THRESHOLDS


def test_unserved_reference_is_reported(known) -> None:
    assert "not served" in cm.check_drift(known["cmp"], {"reference": "minilm_onnx"})[0]


def test_compare_against_server_matches_inprocess(triton, tmp_path) -> None:
    """The client's served matrix equals the matrix of the same forms run in-process on the same ids."""
    from tritonserving.client import Embedder
    from tritonserving.data import BUILD, Tokenizer, read_sentences
    from tritonserving.runners import TRITON_MODEL, load_form

    parser = argparse.ArgumentParser()
    cm.add_arguments(parser)
    args = parser.parse_args(["--http-url", triton.http_url, "--grpc-url", triton.grpc_url,
                              "--out-dir", str(tmp_path), "--forms", *triton.models])  # fmt: skip
    rc = cm.run(args)
    served = json.loads((tmp_path / "compare.json").read_text())
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert served["forms"][0] == "minilm_onnx"
    assert all(d <= 1e-6 for d in served["protocol_max_abs_diff"].values())

    tok = Tokenizer(BUILD, max_length=args.max_length)
    emb: dict[str, dict[str, np.ndarray]] = {name: {} for name in cm.SETS}
    with Embedder(triton.http_url, model=served["forms"][0]) as embedder:
        step = embedder.max_batch_size  # the chunks the client sent (padding is per chunk)
    for form in served["forms"]:
        runner = load_form(TRITON_MODEL[form], build_dir=BUILD)
        for name in cm.SETS:
            sents = read_sentences(name)
            emb[name][form] = np.concatenate([runner(*tok(sents[i : i + step]))
                                              for i in range(0, len(sents), step)])  # fmt: skip
    local = compare_embeddings(emb["eval_sentences"], emb["queries"], emb["corpus"], k=10)
    np.testing.assert_allclose(served["mean_cos"], local.mean_cos, atol=1e-5)
    np.testing.assert_allclose(served["mean_norm"], local.mean_norm, atol=1e-4)
    np.testing.assert_allclose(served["topk_overlap"], local.topk_overlap, atol=1e-9)
    local.protocol_diff = served["protocol_max_abs_diff"]
    assert rc == (1 if cm.check_drift(local, cm.load_thresholds(args.config)) else 0)


def test_compare_exits_2_with_one_line_when_no_server(tmp_path, capsys) -> None:
    from tritonserving.native_server import free_port

    port = free_port()
    rc = cm.main(["--http-url", f"127.0.0.1:{port}", "--grpc-url", f"127.0.0.1:{port}",
                  "--out-dir", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err
