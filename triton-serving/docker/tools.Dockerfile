# The tools image: export, compare and perf run in it (one image for the three one-shots). It is the Triton SDK
# image of the same NGC release (perf_analyzer, the Triton clients) plus this package and what it imports:
# torch + optimum for the export, ONNX Runtime / OpenVINO for the forms, nvidia-pytriton for perf_analyzer's
# libraries. Installed non-editable into /opt/venv; everything generated goes to $TRITON_SERVING_BUILD.
ARG SDK_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3-sdk
FROM ${SDK_IMAGE}

# PyTorch's CPU index by default (a ~200 MB torch); PyPI's torch is the CUDA build (~3 GB with its libraries).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG UV_VERSION=0.13.8
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_BREAK_SYSTEM_PACKAGES=1

# uv makes the venv itself (no python3-venv needed) from the image's python3; torch first, from its index,
# in a layer of its own (the largest and the most stable one).
RUN --mount=type=secret,id=build_ca --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    python3 -m pip install --no-cache-dir "uv==${UV_VERSION}" \
    && uv venv --python "$(command -v python3)" /opt/venv \
    && uv pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
       --index-strategy unsafe-best-match "torch==2.8.0"

# The package's dependencies (from pyproject.toml alone, so a change of the code or README reuses this layer),
# then the package.
WORKDIR /src/triton-serving
COPY pyproject.toml ./
RUN --mount=type=secret,id=build_ca --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    uv pip install -r pyproject.toml
COPY README.md ./
COPY src ./src
RUN --mount=type=secret,id=build_ca --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    uv pip install --no-deps . && triton-serving --help >/dev/null
COPY drift-thresholds.json /workspace/drift-thresholds.json

ENV TRITON_SERVING_BUILD=/workspace/build \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
WORKDIR /workspace
