"""perf: input data, parsing, and a SHORT real perf_analyzer run that writes its CSV (no timing asserted)."""

from __future__ import annotations

import argparse
import csv
import json
import re

from tritonserving import perf

SAMPLE_STDOUT = """
Request concurrency: 1
  Client:
    Request count: 10
  Server:
    Inference count: 120
    Execution count: 100
Request concurrency: 4
  Server:
    Inference count: 400
    Execution count: 100
"""


def test_parse_server_counts_and_ranges() -> None:
    assert perf.parse_server_counts(SAMPLE_STDOUT) == {1: (120, 100), 4: (400, 100)}
    assert perf.parse_range("1:4") == [1, 2, 3, 4]
    assert perf.parse_range("1,2,8") == [1, 2, 8]


def test_inputs_are_real_text_of_exact_length(tmp_path) -> None:
    ids = perf.make_inputs((16, 64), count=5)
    tok = perf.Tokenizer()
    for seq, rows in ids.items():
        assert rows.shape == (5, seq)
        assert (rows[:, 0] == tok.cls_id).all() and (rows[:, -1] == tok.sep_id).all()
        assert len({tuple(r) for r in rows}) == 5  # different windows of the text
        assert (rows[:, 1:-1] > 999).mean() > 0.9  # word pieces, not special tokens or padding
    paths = perf.write_inputs(ids, tmp_path)
    data = json.loads(paths[16].read_text())["data"]
    assert len(data) == 5 and data[0]["input_ids"]["shape"] == [16]
    assert data[0]["attention_mask"]["content"] == [1] * 16


def test_text_inputs_tokenise_to_the_same_lengths(tmp_path) -> None:
    """The text-in models get strings of whole words that the server's tokenizer turns into exactly seq."""
    texts = perf.make_texts((16, 64), count=5)
    tok = perf.Tokenizer(max_length=512)
    for seq, strings in texts.items():
        assert len(set(strings)) == 5
        ids, mask = tok(strings)
        assert ids.shape == (5, seq) and mask.all()
    data = json.loads(perf.write_text_inputs(texts, tmp_path)[64].read_text())["data"]
    assert data[0]["text"] == {"content": [texts[64][0]], "shape": [1]}


def test_short_perf_run_writes_csv_table_and_plot(triton, tmp_path) -> None:
    parser = argparse.ArgumentParser()
    perf.add_arguments(parser)
    args = parser.parse_args([
        "--http-url", triton.http_url, "--grpc-url", triton.grpc_url, "--forms", "minilm_onnx",
        "--seq-lens", "16", "--concurrency", "1,2", "--interval-ms", "400", "--stability", "100",
        "--max-trials", "4", "--inprocess-batches", "1,2", "--budget-s", "240", "--out-dir", str(tmp_path),
    ])  # fmt: skip
    assert perf.run(args) == 0
    raw = sorted((tmp_path / "raw").glob("minilm_onnx-seq16-c*.csv"))
    assert raw, "perf_analyzer wrote no CSV"
    header = raw[0].read_text().splitlines()[0]
    assert header.startswith("Concurrency,Inferences/Second") and "p95 latency" in header
    rows = list(csv.DictReader((tmp_path / "perf.csv").open()))
    for model in ("minilm_onnx", "minilm_onnx_text"):  # ids in, and text in beside it
        served = [r for r in rows if r["form"] == model]
        assert len(served) == 2 and any(r["status"].startswith("ok") for r in served), served
    assert {r["concurrency"] for r in rows if r["form"] == "inprocess-ort"} == {"1", "2"}
    report = (tmp_path / "perf.md").read_text()
    assert "vs in-process batch 1" in report and "Server-side tokenisation" in report
    # the tokenizer step's own compute time, from the server's statistics, beside the form's
    assert re.search(r"\| tokenizer \| [1-9]\d* \| [1-9]\d* \| \d+\.\d+ \|", report), report
    assert re.search(r"\| minilm_onnx \| [1-9]\d* \|", report), report
    assert (tmp_path / "perf.png").stat().st_size > 10_000
