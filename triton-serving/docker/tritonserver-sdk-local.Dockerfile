# Local equivalent of nvcr.io/nvidia/tritonserver:24.10-py3-sdk, built only when that image cannot be pulled.
# It reproduces only what this folder's compose relies on: python3 + pip, the Triton clients of the same
# release line (tritonclient 2.50.0, the last wheel with perf_analyzer that runs on this glibc) with
# `perf_analyzer` on PATH and the libraries it loads (libb64, the CUDA runtime), curl, and /workspace.
# No GPU, no Model Analyzer, no C++ client libraries.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG TRITONCLIENT_VERSION=2.50.0
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-pip ca-certificates curl libb64-0d \
    && rm -rf /var/lib/apt/lists/*

# PIP_BREAK_SYSTEM_PACKAGES: Debian's python3 marks itself externally managed; the official image (Ubuntu
# 22.04) installs the clients into its system python3 too.
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi; \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
      "tritonclient[all]==${TRITONCLIENT_VERSION}" "nvidia-cuda-runtime-cu12==12.8.90" \
    && cudart=$(python3 -c 'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], "lib"))') \
    && echo "$cudart" > /etc/ld.so.conf.d/cuda-runtime.conf && ldconfig \
    && ! ldd "$(command -v perf_analyzer)" | grep 'not found'

WORKDIR /workspace
