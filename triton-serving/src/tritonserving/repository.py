"""Triton model repositories: ``build/repository-gpu`` (compose, GPU) and ``build/repository-cpu`` (native).

Every config is built as Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``) and
written with ``text_format``, so a field Triton does not know cannot slip in. All models share one contract:
inputs ``input_ids``/``attention_mask`` INT64 ``[-1, -1]``, output
``sentence_embedding`` FP32 ``[-1, 384]`` (``max_batch_size`` > 0, so ``dims`` exclude the batch axis).

GPU repository:

* ``minilm_onnx``: onnxruntime_onnx, fp32 graph, KIND_GPU (CUDA EP).
* ``minilm_openvino``: onnxruntime_onnx with the OpenVINO CPU execution accelerator, KIND_CPU. Chosen over
  the ``openvino`` backend because it serves the very same ``model.onnx`` (no IR whose version must match
  the OpenVINO inside the image) and the onnxruntime backend ships in every tritonserver image; the
  accelerator only acts on CPU instances, hence KIND_CPU.
* ``minilm_trt_fp32|fp16|int8``: tensorrt_plan; ``1/model.plan`` is written by ``triton-serving plans``
  (trtexec on a GPU, ``docker compose run --rm plans``) and kept when the repository is regenerated.

CPU repository (python backend, run by the tritonserver of the nvidia-pytriton wheel): ``minilm_onnx``
(ORT fp32), ``minilm_openvino`` (OpenVINO runtime on the IR), ``minilm_onnx_fp16`` (ORT on the fp16 graph)
and ``minilm_onnx_int8`` (ORT on the int8 Q/DQ graph); the last two stand in on CPU for the fp16 and int8
TensorRT plans.

Text in, both repositories: every form ``<form>`` also gets ``<form>_text``, an ensemble of two steps:
``tokenizer`` (python backend, the exported ``tokenizer.json`` through the ``tokenizers`` library; input
``text`` BYTES ``[-1, 1]``, outputs ``input_ids``/``attention_mask``) then the form itself, so a client sends
strings and gets the same ``sentence_embedding``. One tokenizer model serves every ensemble.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from tritonserving import EMBED_DIM, INPUT_NAMES, MAX_BATCH_SIZE, OUTPUT_NAME, text_model, trt_plans
from tritonserving.data import BUILD, artefact, vocab_size
from tritonserving.input_checks import MAX_TEXT_TOKENS, TEXT_INPUT

#: config parameter naming the exact files a model serves: a running server can be checked against a build
BUILD_HASH_KEY = "build_hash"
TEMPLATE = Path(__file__).parent / "templates" / "python_model.py"
TOKENIZER_TEMPLATE = Path(__file__).parent / "templates" / "tokenizer_model.py"
#: the request rules, copied next to every python-backend model.py (it imports them from its own folder)
CHECKS = Path(__file__).parent / "input_checks.py"
#: every Python file a repository ships (the container image must provide what they import)
SHIPPED_PYTHON = (TEMPLATE, TOKENIZER_TEMPLATE, CHECKS)
TOKENIZER_MODEL = "tokenizer"


@dataclass(frozen=True)
class ModelSpec:
    """One model of a repository: how it is served and which built files it needs."""

    name: str
    backend: str  # onnxruntime | tensorrt | python | ensemble
    files: tuple[tuple[str, str], ...]  # (artefact of data.LAYOUT, file name in <model>/1/)
    kind: str = "KIND_CPU"
    parameters: tuple[tuple[str, str], ...] = ()
    cpu_accelerator: str | None = None
    queue_delay_us: int = 500
    role: str = "form"  # form (ids in) | tokenizer | text (ensemble: tokenizer -> ``form``)
    form: str = ""  # for role text: the form model the ensemble runs after the tokenizer

    @property
    def template(self) -> Path:
        """The model.py a python-backend model runs."""
        return TOKENIZER_TEMPLATE if self.role == "tokenizer" else TEMPLATE


TOKENIZER = ModelSpec(
    TOKENIZER_MODEL,
    "python",
    (("tokenizer", "tokenizer.json"),),
    parameters=(("max_length", str(MAX_TEXT_TOKENS)),),
    queue_delay_us=100,
    role="tokenizer",
)


def with_text_models(forms: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
    """``forms``, the tokenizer, and one text-in ensemble per form."""
    texts = tuple(
        ModelSpec(
            text_model(f.name),
            "ensemble",
            (),
            parameters=(("truncation", f"strings longer than {MAX_TEXT_TOKENS} tokens are truncated"),),
            role="text",
            form=f.name,
        )
        for f in forms
    )
    return (*forms, TOKENIZER, *texts)


GPU_FORMS = (
    ModelSpec(
        "minilm_onnx",
        "onnxruntime",
        (("fp32", "model.onnx"),),
        kind="KIND_GPU",
        queue_delay_us=100,
    ),
    ModelSpec(
        "minilm_openvino",
        "onnxruntime",
        (("fp32", "model.onnx"),),
        kind="KIND_CPU",
        cpu_accelerator="openvino",
    ),
    ModelSpec("minilm_trt_fp32", "tensorrt", (), kind="KIND_GPU", queue_delay_us=100),
    ModelSpec("minilm_trt_fp16", "tensorrt", (), kind="KIND_GPU", queue_delay_us=100),
    ModelSpec("minilm_trt_int8", "tensorrt", (), kind="KIND_GPU", queue_delay_us=100),
)

CPU_FORMS = (
    ModelSpec(
        "minilm_onnx",
        "python",
        (("fp32", "model.onnx"),),
        parameters=(("engine", "onnxruntime"), ("model_file", "model.onnx")),
    ),
    ModelSpec(
        "minilm_openvino",
        "python",
        (("openvino", "model.xml"), ("openvino_weights", "model.bin")),
        parameters=(("engine", "openvino"), ("model_file", "model.xml")),
    ),
    ModelSpec(
        "minilm_onnx_fp16",
        "python",
        (("fp16", "model.onnx"),),
        parameters=(("engine", "onnxruntime"), ("model_file", "model.onnx")),
    ),
    ModelSpec(
        "minilm_onnx_int8",
        "python",
        (("int8", "model.onnx"),),
        parameters=(("engine", "onnxruntime"), ("model_file", "model.onnx")),
    ),
)


GPU_MODELS = with_text_models(GPU_FORMS)
CPU_MODELS = with_text_models(CPU_FORMS)


def _ensemble(cfg, spec: ModelSpec) -> None:
    """Inputs, outputs and the two steps of a text-in ensemble: tokenizer, then the form."""
    from tritonclient.grpc import model_config_pb2 as mc

    cfg.platform = "ensemble"
    cfg.input.add(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])
    cfg.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[EMBED_DIM])
    tokenize = cfg.ensemble_scheduling.step.add(model_name=TOKENIZER_MODEL, model_version=-1)
    tokenize.input_map[TEXT_INPUT] = TEXT_INPUT
    embed = cfg.ensemble_scheduling.step.add(model_name=spec.form, model_version=-1)
    for name in INPUT_NAMES:
        tokenize.output_map[name] = name
        embed.input_map[name] = name
    embed.output_map[OUTPUT_NAME] = OUTPUT_NAME


def model_config(spec: ModelSpec, max_batch_size: int = MAX_BATCH_SIZE, build_hash: str = ""):
    """The ``ModelConfig`` protobuf of one model."""
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = mc.ModelConfig(name=spec.name, max_batch_size=max_batch_size)
    for key, value in spec.parameters:
        cfg.parameters[key].string_value = value
    if build_hash:
        cfg.parameters[BUILD_HASH_KEY].string_value = build_hash
    if spec.role == "text":
        _ensemble(cfg, spec)
        return cfg
    if spec.backend == "onnxruntime":
        cfg.platform = "onnxruntime_onnx"
    elif spec.backend == "tensorrt":
        cfg.platform = "tensorrt_plan"
    else:
        cfg.backend = spec.backend
    if spec.role == "tokenizer":
        cfg.input.add(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])
        for name in INPUT_NAMES:
            cfg.output.add(name=name, data_type=mc.TYPE_INT64, dims=[-1])
    else:
        for name in INPUT_NAMES:
            cfg.input.add(name=name, data_type=mc.TYPE_INT64, dims=[-1])
        cfg.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[EMBED_DIM])
    group = cfg.instance_group.add(count=1, kind=getattr(mc.ModelInstanceGroup, spec.kind))
    if spec.kind == "KIND_GPU":
        group.gpus.append(0)
    cfg.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us
    if spec.cpu_accelerator:
        cfg.optimization.execution_accelerators.cpu_execution_accelerator.add(name=spec.cpu_accelerator)
    return cfg


def config_text(spec: ModelSpec, max_batch_size: int = MAX_BATCH_SIZE, build_hash: str = "") -> str:
    """``config.pbtxt`` text of one model."""
    from google.protobuf import text_format

    return text_format.MessageToString(model_config(spec, max_batch_size, build_hash))


def read_parameters(config_path: Path) -> dict[str, str]:
    """The string ``parameters`` of a written ``config.pbtxt``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse(Path(config_path).read_text(), mc.ModelConfig())
    return {key: value.string_value for key, value in cfg.parameters.items()}


def files_hash(version_dir: Path) -> str:
    """Short sha256 over the names and bytes of every file a model version serves.

    Left out: ``model.plan`` (built in place on a GPU) and ``__pycache__`` (the python backend writes it when
    it imports ``input_checks``).
    """
    digest = hashlib.sha256()
    served = (p for p in version_dir.rglob("*") if p.is_file() and p.name != "model.plan")
    for path in sorted(p for p in served if "__pycache__" not in p.relative_to(version_dir).parts):
        digest.update(path.relative_to(version_dir).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _place(src: Path, dst: Path) -> None:
    """Hard link (the fp32 graph is ~90 MB, used by several models), copy across file systems."""
    if dst.exists() or dst.is_symlink():
        if dst.stat().st_ino == src.stat().st_ino and dst.stat().st_mtime >= src.stat().st_mtime:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_repository(build_dir: Path, out: Path, specs: tuple[ModelSpec, ...]) -> Path:
    """Write ``out/<model>/{config.pbtxt,1/...}``; existing ``model.plan`` files are kept."""
    needed = {artefact(name, build_dir) for spec in specs for name, _ in spec.files}
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(sorted(set(missing)))}: run `make precision` first")
    out.mkdir(parents=True, exist_ok=True)
    wanted = {s.name for s in specs}
    for stale in out.iterdir():
        if stale.is_dir() and stale.name not in wanted:
            shutil.rmtree(stale)
    for spec in specs:
        version = out / spec.name / "1"
        version.mkdir(parents=True, exist_ok=True)
        keep = {name for _, name in spec.files} | {"model.plan", "model.py", CHECKS.name}
        for old in version.iterdir():
            if old.name not in keep:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for rel, name in spec.files:
            _place(artefact(rel, build_dir), version / name)
        if spec.backend == "python":
            shutil.copy2(spec.template, version / "model.py")
            shutil.copy2(CHECKS, version / CHECKS.name)
        if spec.role == "form" and spec.backend == "python":
            spec = replace(spec, parameters=(*spec.parameters, ("vocab_size", str(vocab_size(build_dir)))))
        # an ensemble serves no file: its hash is the one of its steps, its config
        served = config_text(spec) if spec.role == "text" else ""
        build_hash = hashlib.sha256(served.encode()).hexdigest()[:16] if served else files_hash(version)
        (out / spec.name / "config.pbtxt").write_text(config_text(spec, build_hash=build_hash))
    return out


def generate(build_dir: str | os.PathLike = BUILD) -> dict[str, Path]:
    """Write both repositories and the trtexec script for the plans service; returns their paths."""
    build_dir = Path(build_dir)
    gpu = write_repository(build_dir, artefact("repository-gpu", build_dir), GPU_MODELS)
    cpu = write_repository(build_dir, artefact("repository-cpu", build_dir), CPU_MODELS)
    script = trt_plans.write_script(build_dir)
    return {"repository-gpu": gpu, "repository-cpu": cpu, "plans-script": script}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments of ``triton-serving repo``."""
    parser.add_argument("--build-dir", type=Path, default=BUILD, help=f"output root (default: {BUILD})")


def run(args: argparse.Namespace) -> int:
    """``triton-serving repo``: write build/repository-gpu and build/repository-cpu."""
    try:
        paths = generate(args.build_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    for key, path in paths.items():
        print(f"{key:15s} {path}")
    plans = [
        m.name
        for m in GPU_FORMS
        if m.backend == "tensorrt" and not trt_plans.plan_path(m.name, args.build_dir).is_file()
    ]
    if plans:
        print(
            f"note: {', '.join(plans)} have no model.plan yet: build them on a GPU (make plans, or "
            "docker compose run --rm plans)"
        )
    return 0
