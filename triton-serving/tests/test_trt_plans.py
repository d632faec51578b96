"""TensorRT plans: the exact trtexec commands, the one-line refusal without a GPU, the compose pairing."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tritonserving import MAX_BATCH_SIZE, trt_plans

FOLDER = Path(__file__).resolve().parents[1]

PROFILE = [
    "--minShapes=input_ids:1x1,attention_mask:1x1",
    "--optShapes=input_ids:8x128,attention_mask:8x128",
    f"--maxShapes=input_ids:{MAX_BATCH_SIZE}x512,attention_mask:{MAX_BATCH_SIZE}x512",
]
TAIL = ["--memPoolSize=workspace:2048", "--skipInference"]


def test_exact_commands() -> None:
    assert trt_plans.all_commands("build") == [
        [
            "trtexec",
            "--onnx=build/onnx/fp32/model.onnx",
            "--saveEngine=build/repository-gpu/minilm_trt_fp32/1/model.plan",
            *PROFILE,
            "--noTF32",
            *TAIL,
        ],
        [
            "trtexec",
            "--onnx=build/onnx/fp16/model.onnx",
            "--saveEngine=build/repository-gpu/minilm_trt_fp16/1/model.plan",
            *PROFILE,
            "--fp16",
            *TAIL,
        ],
        [
            "trtexec",
            "--onnx=build/onnx/int8_trt/model.onnx",
            "--saveEngine=build/repository-gpu/minilm_trt_int8/1/model.plan",
            *PROFILE,
            "--int8",
            "--fp16",
            *TAIL,
        ],
    ]


def test_commands_follow_the_build_dir_and_trtexec_path(tmp_path: Path) -> None:
    cmd = trt_plans.plan_command("minilm_trt_int8", tmp_path, "/usr/src/tensorrt/bin/trtexec")
    assert cmd[0] == "/usr/src/tensorrt/bin/trtexec"
    assert cmd[1] == f"--onnx={tmp_path}/onnx/int8_trt/model.onnx"
    assert cmd[2] == f"--saveEngine={tmp_path}/repository-gpu/minilm_trt_int8/1/model.plan"


def test_written_script_runs_the_same_commands(tmp_path: Path) -> None:
    script = trt_plans.write_script(tmp_path)
    lines = [ln for ln in script.read_text().splitlines() if ln.startswith("trtexec ")]
    assert [shlex.split(ln) for ln in lines] == trt_plans.all_commands("build")
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_without_gpu_one_line_and_nonzero(monkeypatch, capsys) -> None:
    real_which = trt_plans.shutil.which
    monkeypatch.setattr(trt_plans.shutil, "which", lambda n: None if n == "nvidia-smi" else real_which(n))
    parser = __import__("argparse").ArgumentParser()
    trt_plans.add_arguments(parser)
    rc = trt_plans.run(parser.parse_args([]))
    out, err = capsys.readouterr()
    assert rc == trt_plans.NO_GPU_EXIT != 0
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "GPU" in err and err.startswith("error:")


def test_cli_dry_run_prints_the_commands(tmp_path: Path) -> None:
    cli = Path(os.sys.executable).parent / "triton-serving"
    proc = subprocess.run(
        [str(cli), "plans", "--dry-run", "--build-dir", "build"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [shlex.split(ln) for ln in proc.stdout.strip().splitlines()] == trt_plans.all_commands("build")


def test_plans_service_script_refuses_without_gpu(tmp_path: Path) -> None:
    """docker/build_plans.sh (the compose plans service) with no nvidia-smi on PATH: one line, exit 3."""
    env = {"PATH": str(tmp_path), "WORKSPACE": str(FOLDER)}
    proc = subprocess.run(
        ["/bin/bash", str(FOLDER / "docker" / "build_plans.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 1 and "GPU" in proc.stderr


def _compose_images() -> dict[str, str]:
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    args = [
        "-f",
        "docker-compose.yaml",
        "--env-file",
        ".env.example",
        "--profile",
        "gpu",
        "config",
        "--format",
        "json",
    ]
    proc = subprocess.run([str(binary), *args], cwd=FOLDER, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    # a service built FROM an official image counts as that image (the GPU server: the official one + deps)
    return {
        name: svc.get("build", {}).get("args", {}).get("TRITON_BASE_IMAGE") or svc.get("image", "")
        for name, svc in services.items()
    }


def test_plans_image_matches_the_triton_release() -> None:
    """A plan only loads in the TensorRT that built it: the plans image must be the Triton image's release."""
    images = _compose_images()
    trt = [img for img in images.values() if img.startswith("nvcr.io/nvidia/tensorrt:")]
    triton = [
        img
        for img in images.values()
        if img.startswith("nvcr.io/nvidia/tritonserver:") and not img.endswith("-sdk")
    ]
    assert trt and triton
    releases = {img.split(":")[1].removesuffix("-py3") for img in trt + triton}
    assert len(releases) == 1, images
    (release,) = releases
    assert release == trt_plans.NGC_RELEASE


@pytest.mark.parametrize("model", list(trt_plans.PLAN_FORMS))
def test_every_plan_model_is_in_the_gpu_repository(model: str) -> None:
    from tritonserving.repository import GPU_MODELS

    spec = {m.name: m for m in GPU_MODELS}[model]
    assert spec.backend == "tensorrt" and spec.kind == "KIND_GPU"
