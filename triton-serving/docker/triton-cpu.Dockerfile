# The compose `triton` service (CPU): the official Triton image plus the Python packages that the python-backend
# models of build/repository-cpu import. The repository is not copied: the `export` service writes it into the
# `build` volume, mounted read-only, so a new export needs no new image.
ARG TRITON_BASE_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_BASE_IMAGE}

COPY docker/python-backend-requirements.txt /tmp/python-backend-requirements.txt
# The image's python3 is the interpreter the python backend stub embeds, so the packages go there (as root).
# PIP_BREAK_SYSTEM_PACKAGES: a Debian-based python3 marks itself externally managed; Ubuntu 22.04's ignores it.
# The build CA secret is empty for users; the test passes the host's bundle when a TLS proxy is in the way.
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -r /tmp/python-backend-requirements.txt \
    && rm /tmp/python-backend-requirements.txt

# triton-server (uid 1000) ships with the official image; the server needs no root.
USER triton-server
WORKDIR /opt/tritonserver
