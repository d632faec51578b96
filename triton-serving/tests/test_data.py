"""The shared data module: build folder for both kinds of install, sentence sets, the one tokenizer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tritonserving import data

FOLDER = Path(__file__).resolve().parents[1]


def test_build_folder_of_a_source_checkout() -> None:
    assert data.source_folder() == FOLDER
    if not os.environ.get("TRITON_SERVING_BUILD"):
        assert data.BUILD == FOLDER / "build"


def _build_dir_seen_by(package_parent: Path, cwd: Path, env_build: str | None) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_SERVING_BUILD"}
    env["PYTHONPATH"] = str(package_parent)
    if env_build:
        env["TRITON_SERVING_BUILD"] = env_build
    code = "import tritonserving.data as d; print(d.__file__); print(d.BUILD)"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")  # fmt: skip
    assert out[0].startswith(str(package_parent))  # the copy was imported, not the checkout
    return Path(out[1])


def test_build_folder_of_a_regular_install(tmp_path: Path) -> None:
    """Installed into site-packages (no pyproject next to it): ./build of the working directory."""
    site, work = tmp_path / "site-packages", tmp_path / "work"
    shutil.copytree(FOLDER / "src" / "tritonserving", site / "tritonserving")
    work.mkdir()
    assert _build_dir_seen_by(site, work, None) == work / "build"
    assert _build_dir_seen_by(site, work, str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_sentence_sets_skip_blank_and_comment_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("# a comment\n\n  first  \nsecond\n   \n#another\n")
    assert data.read_lines(path) == ["first", "second"]
    assert len(data.read_sentences("eval_sentences")) == 86
    with pytest.raises(data.DataError, match="no shipped sentence set"):
        data.read_sentences("nope")
    with pytest.raises(data.DataError, match="no such file"):
        data.read_lines(tmp_path / "missing.txt")


def test_tokenizer_equals_the_transformers_one() -> None:
    """The one tokenizer gives the ids and masks the model's own (transformers) tokenizer gives."""
    from transformers import AutoTokenizer

    sentences = data.read_sentences("eval_sentences")[:20] + ["word " * 400, "naïve café 東京 😀", "x"]
    reference = AutoTokenizer.from_pretrained(str(data.artefact("export")))
    ours = data.Tokenizer()
    for kwargs, pad_to in (({"padding": True}, None), ({"padding": "max_length"}, 48)):
        ref = reference(sentences, truncation=True, max_length=pad_to or data.DEFAULT_MAX_LENGTH,
                        return_tensors="np", **kwargs)  # fmt: skip
        ids, mask = ours(sentences, pad_to=pad_to)
        np.testing.assert_array_equal(ids, ref["input_ids"])
        np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert ours.vocab_size == data.vocab_size() == 30522


def test_only_the_layout_table_says_where_artefacts_live() -> None:
    """Every module asks ``data.artefact``: no other source file spells a path of the build layout."""
    code = sorted((FOLDER / "src" / "tritonserving").rglob("*.py")) + sorted((FOLDER / "bench").glob("*.py"))
    rels = data.LAYOUT.values()
    # a whole layout path as a string, or a folder of the layout joined onto a path
    spelled = {f'"{rel}"' for rel in rels if "/" in rel or "-" in rel}
    spelled |= {f'/ "{rel.split("/")[0]}"' for rel in rels}
    offenders = [
        f"{path.relative_to(FOLDER)}: {needle}"
        for path in code
        if path.name != "data.py"
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
        for needle in spelled
        if needle in line and f"{needle}:" not in line and "artefact(" not in line and '"""' not in line
    ]
    assert not offenders, offenders
    assert data.artefact("fp32", "b") == Path("b/onnx/fp32/model.onnx")
    with pytest.raises(KeyError, match="no artefact 'nope'"):
        data.artefact("nope")
