# Local equivalent of python:3.11.11-slim-bookworm, built only when that image cannot be pulled.
# Debian bookworm's Python 3.11 (3.11.2, not 3.11.11) with the interface docker-compose.yaml and the client
# Dockerfile rely on: `python`, `python3` and `pip` on PATH, pip allowed to install into the system Python
# (the official image has no PEP 668 marker), LANG=C.UTF-8, CMD python3. Runs as root, like the official image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       python3 python3-pip python-is-python3 \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.*/EXTERNALLY-MANAGED

ENV LANG=C.UTF-8
CMD ["python3"]
