"""The repository of the compose CPU profile: the onnx and OpenVINO forms of the GPU repository, on CPU.

Why: users with Docker but no GPU can still take the container path (``COMPOSE_PROFILES=cpu``).
The tritonserver image has the onnxruntime backend, so the GPU repository's ``minilm_onnx`` and
``minilm_openvino`` work unchanged except for where they run: every instance group becomes ``KIND_CPU`` and
GPU execution accelerators (TensorRT EP) are dropped. The TensorRT plans are left out: they need a GPU.
Configs are parsed and written with Triton's own protobuf schema, never edited as text.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from google.protobuf import text_format

CPU_FORMS = ("minilm_onnx", "minilm_openvino")


def cpu_config(config_text: str) -> str:
    """``config.pbtxt`` text with every instance group on CPU and no GPU accelerator."""
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse(config_text, mc.ModelConfig())
    if not cfg.instance_group:
        cfg.instance_group.add()
    for group in cfg.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        del group.gpus[:]
        group.count = group.count or 1
    del cfg.optimization.execution_accelerators.gpu_execution_accelerator[:]
    return text_format.MessageToString(cfg)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard links where possible (the fp32 model is ~90 MB), copies across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_compose_cpu_repository(gpu_repo: Path, out: Path, forms: tuple[str, ...] = CPU_FORMS) -> Path:
    """Write ``out`` from ``gpu_repo``: the given forms, files linked, configs rewritten for CPU."""
    missing = [f for f in forms if not (gpu_repo / f / "config.pbtxt").exists()]
    if missing:
        raise FileNotFoundError(f"{gpu_repo} lacks {', '.join(missing)}; run `make repo` first")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for form in forms:
        src = gpu_repo / form
        for path in sorted(src.rglob("*")):
            if path.is_file() and path.name != "config.pbtxt":
                _link_or_copy(path, tmp / form / path.relative_to(src))
        (tmp / form).mkdir(parents=True, exist_ok=True)
        (tmp / form / "config.pbtxt").write_text(cpu_config((src / "config.pbtxt").read_text()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main() -> int:
    """``python -m tritonserving.compose_cpu [build_dir]`` (used by ``make up``)."""
    import sys

    build = Path(sys.argv[1] if len(sys.argv) > 1 else "build")
    try:
        out = make_compose_cpu_repository(build / "repository-gpu", build / "repository-compose-cpu")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({', '.join(CPU_FORMS)} on KIND_CPU) for the compose cpu profile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
