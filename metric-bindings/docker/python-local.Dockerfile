# Local stand-in for the official python:<version>-slim-bookworm image, built only when that image cannot be
# pulled (no registry reachable). It reproduces what our Dockerfile relies on and nothing more: `python` and
# `pip` on PATH (root may `pip install` into it), Python's C headers (the official image ships them; CMake's
# FindPython needs them to build the extension). Debian bookworm's Python is 3.11.2, the official tag's 3.11.7.
# BASE_IMAGE: Debian bookworm-slim, the official one or the same release made with debootstrap.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
 && rm -rf /var/lib/apt/lists/*
# A venv owned by root plays the role of the official image's /usr/local prefix (Debian's own Python refuses
# `pip install` outside a venv).
RUN python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:$PATH LANG=C.UTF-8
CMD ["python3"]
