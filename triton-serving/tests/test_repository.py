"""Generated repositories: every config.pbtxt parses with Triton's own schema and matches the ONNX graphs."""

from __future__ import annotations

import py_compile
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonserving import EMBED_DIM, INPUT_NAMES, MAX_BATCH_SIZE, MAX_TEXT_TOKENS, OUTPUT_NAME, text_model
from tritonserving.data import artefact, vocab_size
from tritonserving.repository import (
    BUILD_HASH_KEY,
    CHECKS,
    CPU_MODELS,
    GPU_MODELS,
    TOKENIZER_TEMPLATE,
    files_hash,
    generate,
    write_repository,
)

FOLDER = Path(__file__).resolve().parents[1]
BUILD = FOLDER / "build"

ONNX_TO_TRITON = {onnx.TensorProto.INT64: mc.TYPE_INT64, onnx.TensorProto.FLOAT: mc.TYPE_FP32}
GPU_NAMES = ["minilm_onnx", "minilm_openvino", "minilm_trt_fp32", "minilm_trt_fp16", "minilm_trt_int8"]
CPU_NAMES = ["minilm_onnx", "minilm_openvino", "minilm_onnx_fp16", "minilm_onnx_int8"]
# the ONNX graph each model serves (for the TensorRT plans: the graph trtexec builds the plan from)
SOURCE_GRAPH = {
    ("gpu", "minilm_onnx"): "onnx/fp32/model.onnx",
    ("gpu", "minilm_openvino"): "onnx/fp32/model.onnx",
    ("gpu", "minilm_trt_fp32"): "onnx/fp32/model.onnx",
    ("gpu", "minilm_trt_fp16"): "onnx/fp16/model.onnx",
    ("gpu", "minilm_trt_int8"): "onnx/int8_trt/model.onnx",
    ("cpu", "minilm_onnx"): "onnx/fp32/model.onnx",
    ("cpu", "minilm_openvino"): "onnx/fp32/model.onnx",
    ("cpu", "minilm_onnx_fp16"): "onnx/fp16/model.onnx",
    ("cpu", "minilm_onnx_int8"): "onnx/int8/model.onnx",
}


@pytest.fixture(scope="module")
def repos() -> dict[str, Path]:
    from tritonserving.export import ensure_all

    paths = ensure_all(BUILD)
    return {"gpu": paths["repository-gpu"], "cpu": paths["repository-cpu"]}


def parse(path: Path) -> mc.ModelConfig:
    """Strict parse with Triton's protobuf schema: an unknown field or bad enum raises."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def with_text(forms: list[str]) -> list[str]:
    """The forms, the shared tokenizer and one text-in model per form."""
    return sorted([*forms, "tokenizer", *(text_model(f) for f in forms)])


def test_repositories_hold_exactly_the_contract_models(repos) -> None:
    assert sorted(p.name for p in repos["gpu"].iterdir() if p.is_dir()) == with_text(GPU_NAMES)
    assert sorted(p.name for p in repos["cpu"].iterdir() if p.is_dir()) == with_text(CPU_NAMES)
    from tritonserving.runners import TRITON_MODEL

    assert sorted(TRITON_MODEL) == sorted(CPU_NAMES)  # the serving half's in-process mapping agrees


@pytest.mark.parametrize("kind,name", sorted(SOURCE_GRAPH))
def test_config_parses_and_matches_the_onnx_graph(repos, kind: str, name: str) -> None:
    cfg = parse(repos[kind] / name / "config.pbtxt")
    assert cfg.name == name
    assert cfg.max_batch_size == MAX_BATCH_SIZE > 0
    assert cfg.HasField("dynamic_batching")
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count >= 1

    graph = onnx.load(str(BUILD / SOURCE_GRAPH[kind, name]), load_external_data=False).graph
    onnx_inputs = {i.name: i.type.tensor_type for i in graph.input}
    onnx_outputs = {o.name: o.type.tensor_type for o in graph.output}
    assert [i.name for i in cfg.input] == list(INPUT_NAMES) == list(onnx_inputs)
    assert [o.name for o in cfg.output] == [OUTPUT_NAME] == list(onnx_outputs)
    for tensor in list(cfg.input) + list(cfg.output):
        onnx_t = onnx_inputs.get(tensor.name) or onnx_outputs[tensor.name]
        assert tensor.data_type == ONNX_TO_TRITON[onnx_t.elem_type]
        # Triton dims leave out the batch axis (max_batch_size > 0); symbolic ONNX dims are -1
        onnx_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in onnx_t.shape.dim]
        assert onnx_dims[0] == -1
        assert list(tensor.dims) == onnx_dims[1:]
    assert list(cfg.output[0].dims) == [EMBED_DIM]


@pytest.mark.parametrize("name", GPU_NAMES)
def test_gpu_repository_backends(repos, name: str) -> None:
    cfg = parse(repos["gpu"] / name / "config.pbtxt")
    group = cfg.instance_group[0]
    accelerators = [a.name for a in cfg.optimization.execution_accelerators.cpu_execution_accelerator]
    if name.startswith("minilm_trt_"):
        assert cfg.platform == "tensorrt_plan"
        assert group.kind == mc.ModelInstanceGroup.KIND_GPU
    elif name == "minilm_openvino":
        assert cfg.platform == "onnxruntime_onnx" and accelerators == ["openvino"]
        assert group.kind == mc.ModelInstanceGroup.KIND_CPU  # the OpenVINO accelerator only acts on CPU
        assert (repos["gpu"] / name / "1" / "model.onnx").is_file()
    else:
        assert cfg.platform == "onnxruntime_onnx" and accelerators == []
        assert group.kind == mc.ModelInstanceGroup.KIND_GPU
        assert (repos["gpu"] / name / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("name", CPU_NAMES)
def test_cpu_repository_python_models(repos, name: str) -> None:
    cfg = parse(repos["cpu"] / name / "config.pbtxt")
    assert cfg.backend == "python" and not cfg.platform
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["engine"] == ("openvino" if name == "minilm_openvino" else "onnxruntime")
    version = repos["cpu"] / name / "1"
    assert (version / params["model_file"]).is_file()
    py_compile.compile(str(version / "model.py"), doraise=True)
    # the request rules travel with the model, and the vocabulary size comes from the exported model
    assert (version / "input_checks.py").read_bytes() == CHECKS.read_bytes()
    assert params["vocab_size"] == str(vocab_size(BUILD)) == "30522"
    assert params[BUILD_HASH_KEY] == files_hash(version)


def test_build_hash_follows_every_served_file(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.py").write_text("a")
    (version / "input_checks.py").write_text("b")
    first = files_hash(version)
    (version / "input_checks.py").write_text("c")
    assert files_hash(version) != first
    (version / "input_checks.py").write_text("b")
    assert files_hash(version) == first
    (version / "model.plan").write_text("a plan is built in place, it is not part of the build")
    (version / "__pycache__").mkdir()
    (version / "__pycache__" / "input_checks.cpython-311.pyc").write_bytes(b"written by the server")
    assert files_hash(version) == first


def test_cpu_models_serve_the_right_graph(repos) -> None:
    """Each python model's file is the very form it stands for (hard link or identical copy)."""
    for name, rel in (
        ("minilm_onnx", "onnx/fp32/model.onnx"),
        ("minilm_onnx_fp16", "onnx/fp16/model.onnx"),
        ("minilm_onnx_int8", "onnx/int8/model.onnx"),
    ):
        assert (repos["cpu"] / name / "1" / "model.onnx").read_bytes() == (BUILD / rel).read_bytes()
    assert (repos["cpu"] / "minilm_openvino" / "1" / "model.xml").read_bytes() == (
        BUILD / "openvino" / "model.xml"
    ).read_bytes()


def test_regenerating_keeps_built_plans_and_drops_stale_models(repos, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository(BUILD, out, GPU_MODELS)
    plan = out / "minilm_trt_fp16" / "1" / "model.plan"
    plan.write_bytes(b"not a real plan")
    (out / "old_model" / "1").mkdir(parents=True)
    write_repository(BUILD, out, GPU_MODELS)
    assert plan.read_bytes() == b"not a real plan"
    assert not (out / "old_model").exists()


def test_missing_forms_get_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make precision"):
        write_repository(tmp_path, tmp_path / "repo", CPU_MODELS)


def test_generate_is_idempotent(repos) -> None:
    before = {p: p.read_text() for p in repos["gpu"].rglob("config.pbtxt")}
    generate(BUILD)
    assert {p: p.read_text() for p in repos["gpu"].rglob("config.pbtxt")} == before


def tensors(declared) -> list[tuple[str, int, list[int]]]:
    """(name, data type, dims) of a config's inputs or outputs."""
    return [(t.name, t.data_type, list(t.dims)) for t in declared]


@pytest.mark.parametrize("kind,form", [("gpu", n) for n in GPU_NAMES] + [("cpu", n) for n in CPU_NAMES])
def test_text_model_is_the_tokenizer_then_the_form(repos, kind: str, form: str) -> None:
    """``<form>_text``: strings in, the form's output out, through two steps wired name to name."""
    cfg = parse(repos[kind] / text_model(form) / "config.pbtxt")
    assert cfg.platform == "ensemble" and cfg.max_batch_size == MAX_BATCH_SIZE
    assert tensors(cfg.input) == [("text", mc.TYPE_STRING, [1])]
    assert tensors(cfg.output) == [(OUTPUT_NAME, mc.TYPE_FP32, [EMBED_DIM])]
    tokenize, embed = cfg.ensemble_scheduling.step
    assert (tokenize.model_name, embed.model_name) == ("tokenizer", form)
    assert dict(tokenize.input_map) == {"text": "text"}
    assert dict(tokenize.output_map) == dict(embed.input_map) == {n: n for n in INPUT_NAMES}
    assert dict(embed.output_map) == {OUTPUT_NAME: OUTPUT_NAME}
    # each step's tensors are what the step's own config declares
    tok = parse(repos[kind] / "tokenizer" / "config.pbtxt")
    assert [o.name for o in tok.output] == [i.name for i in parse(repos[kind] / form / "config.pbtxt").input]
    assert "truncated" in cfg.parameters["truncation"].string_value
    assert (repos[kind] / text_model(form) / "1").is_dir()  # an ensemble still needs its version folder


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_tokenizer_model_ships_the_exported_tokenizer(repos, kind: str) -> None:
    cfg = parse(repos[kind] / "tokenizer" / "config.pbtxt")
    assert cfg.backend == "python" and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert tensors(cfg.input) == [("text", mc.TYPE_STRING, [1])]
    assert tensors(cfg.output) == [(n, mc.TYPE_INT64, [-1]) for n in INPUT_NAMES]
    assert cfg.HasField("dynamic_batching") and cfg.max_batch_size == MAX_BATCH_SIZE
    version = repos[kind] / "tokenizer" / "1"
    assert (version / "tokenizer.json").read_bytes() == artefact("tokenizer", BUILD).read_bytes()
    assert (version / "model.py").read_bytes() == TOKENIZER_TEMPLATE.read_bytes()
    assert (version / "input_checks.py").read_bytes() == CHECKS.read_bytes()
    py_compile.compile(str(version / "model.py"), doraise=True)
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["max_length"] == str(MAX_TEXT_TOKENS) and params[BUILD_HASH_KEY] == files_hash(version)
