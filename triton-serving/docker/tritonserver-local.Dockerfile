# Local stand-in for nvcr.io/nvidia/tritonserver:24.10-py3, built only when that image cannot be pulled.
# The same server, Triton 2.51, as the native path: the tritonserver binary and python backend of the
# nvidia-pytriton 0.7.0 wheel. It reproduces only what this folder's compose relies on: `tritonserver` on PATH,
# /opt/tritonserver/backends with the python backend (stub for this image's python3), python3 + pip for the
# backend's packages, curl for the healthcheck and the user triton-server (uid 1000). It has no onnxruntime,
# TensorRT or GPU support: it stands in for the CPU profile only.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG PYTRITON_VERSION=0.7.0
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-pip libpython3.11 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home triton-server

# bin/, backends/, caches/ of the wheel's pytriton/tritonserver and its bundled libraries (nvidia_pytriton.libs)
# go where the official image keeps them; the stub for this python3 goes next to libtriton_python.so.
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    set -e; tmp=$(mktemp -d); \
    python3 -m pip download --no-cache-dir --no-deps -d "$tmp" "nvidia-pytriton==${PYTRITON_VERSION}"; \
    python3 -m zipfile -e "$tmp"/nvidia_pytriton-*.whl "$tmp/x"; \
    src="$tmp/x/pytriton/tritonserver"; pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    mkdir -p /opt/tritonserver; \
    cp -r "$src/bin" "$src/backends" "$src/caches" /opt/tritonserver/; \
    cp -r "$tmp/x/nvidia_pytriton.libs" /opt/tritonserver/lib; \
    cp "$src/python_backend_stubs/$pyver/triton_python_backend_stub" /opt/tritonserver/backends/python/; \
    chmod 0755 /opt/tritonserver/bin/* /opt/tritonserver/backends/python/triton_python_backend_stub; \
    rm -rf "$tmp"; \
    echo "2.51.0" > /opt/tritonserver/TRITON_VERSION

ENV PATH=/opt/tritonserver/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/tritonserver/lib \
    TRITON_SERVER_USER=triton-server
WORKDIR /opt/tritonserver
