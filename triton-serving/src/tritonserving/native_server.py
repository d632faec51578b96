"""The real Triton Inference Server (2.51, CPU) run as a local process, straight from the PyPI wheel.

Why this exists: the container path (``docker compose up``) needs Docker and, for the TensorRT forms, a GPU.
Tests, CI and no-Docker users run the very same server software natively: the ``tritonserver`` binary that
the ``nvidia-pytriton`` wheel ships (with its python backend), serving the CPU model repository.

The wheel's layout is meant for PyTriton, not for running the binary by hand. What it needs, found by trying:

* ``bin/``, ``backends/`` and ``caches/`` copied out of ``pytriton/tritonserver`` into a staging dir
  (``build/triton-native``; copied once, reused while the wheel and the interpreter stay the same);
* ``python_backend_stubs/<X.Y>/triton_python_backend_stub`` put into ``backends/python/``;
* ``LD_LIBRARY_PATH`` = the wheel's ``nvidia_pytriton.libs`` + the directory of the running interpreter's
  ``libpython3.x.so`` (the stub embeds that interpreter);
* the venv's ``bin`` first on ``PATH`` so that the embedded interpreter finds the venv's site-packages
  (numpy < 2, onnxruntime, openvino used by the python-backend models).

perf_analyzer needs two of the wheel's libraries too: ``tritonserving.perf`` stages them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tritonserving.data import BUILD, artefact

STAGING = artefact("native_staging", BUILD)
CPU_REPOSITORY = artefact("repository-cpu", BUILD)

#: Compose defaults (docker-compose.yaml publishes these); env vars override, as in every folder.
DEFAULT_HTTP_PORT = int(os.environ.get("TRITON_HTTP_PORT", "8000"))
DEFAULT_GRPC_PORT = int(os.environ.get("TRITON_GRPC_PORT", "8001"))
DEFAULT_METRICS_PORT = int(os.environ.get("TRITON_METRICS_PORT", "8002"))


class NativeServerError(RuntimeError):
    """A clear, one-line reason why the native server cannot be staged or started."""


def _site_packages_of(module: str) -> Path:
    """Site-packages dir that holds ``module``, found without importing it (pytriton imports are slow)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NativeServerError(
            f"python package {module!r} is not installed in {sys.prefix}; run `make install` (or "
            f"`uv pip install -e .`) in triton-serving/"
        )
    return Path(list(spec.submodule_search_locations)[0]).parent


def wheel_server_dir() -> Path:
    """``pytriton/tritonserver`` inside the nvidia-pytriton wheel."""
    d = _site_packages_of("pytriton") / "pytriton" / "tritonserver"
    if not (d / "bin" / "tritonserver").exists():
        raise NativeServerError(f"{d}/bin/tritonserver not found: is nvidia-pytriton (0.7.x) installed?")
    return d


def wheel_libs_dir() -> Path:
    """``nvidia_pytriton.libs``: the libraries auditwheel bundled (libtritonserver, libb64, libcudart)."""
    d = _site_packages_of("pytriton") / "nvidia_pytriton.libs"
    if not d.is_dir():
        raise NativeServerError(f"{d} not found: is nvidia-pytriton (0.7.x) installed?")
    return d


def python_libdir() -> Path:
    """Directory of the running interpreter's ``libpython3.x.so``, which the python backend stub links to."""
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    ldlib = (
        sysconfig.get_config_var("LDLIBRARY")
        or f"libpython{sys.version_info.major}.{sys.version_info.minor}.so"
    )
    if not (libdir / ldlib).exists():
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise NativeServerError(
            f"{libdir / ldlib} not found: the python backend stub needs a shared libpython; install it "
            f"(Debian/Ubuntu: apt-get install libpython{ver}-dev; pyenv: "
            f"PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install {ver}), then rm -rf .venv && make install"
        )
    return libdir


def _stamp() -> str:
    """What the staged copy depends on: wheel location/mtime and the interpreter version."""
    src = wheel_server_dir()
    return json.dumps(
        {
            "wheel": str(src),
            "mtime": int((src / "bin" / "tritonserver").stat().st_mtime),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        },
        sort_keys=True,
    )


def stage(staging: Path = STAGING) -> Path:
    """Copy the server out of the wheel into ``staging`` (once; cached by a stamp file) and return it.

    Why copy: the python backend looks for its stub next to ``libtriton_python.so``, and the wheel keeps the
    stubs for every Python version elsewhere; we must not modify the installed wheel itself.
    """
    stamp_file = staging / ".stamp"
    stamp = _stamp()
    if (
        stamp_file.exists()
        and stamp_file.read_text() == stamp
        and (staging / "bin" / "tritonserver").exists()
    ):
        return staging
    src = wheel_server_dir()
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.exists():
        have = sorted(p.name for p in (src / "python_backend_stubs").iterdir())
        raise NativeServerError(f"no python backend stub for Python {pyver} in the wheel (it has {have})")
    tmp = staging.with_name(f"{staging.name}.tmp{os.getpid()}")  # per process: runs may overlap
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for sub in ("bin", "backends", "caches"):
        shutil.copytree(src / sub, tmp / sub, symlinks=True)
    shutil.copy2(stub, tmp / "backends" / "python" / "triton_python_backend_stub")
    (tmp / ".stamp").write_text(stamp)
    if stamp_file.exists() and stamp_file.read_text() == stamp:  # another process staged it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return staging
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tmp.rename(staging)
    except OSError:  # lost a race to another process: its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return staging


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: wheel libs + libpython on LD_LIBRARY_PATH, venv bin first on PATH."""
    env = dict(os.environ if base is None else base)
    ld = [str(wheel_libs_dir()), str(python_libdir())]
    if env.get("LD_LIBRARY_PATH"):
        ld.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(ld)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    # The python backend models read these (model.py of the CPU repository); keep them offline.
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def free_port() -> int:
    """A TCP port that is free on loopback right now (bind port 0), so we never collide with other servers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_json(url: str, timeout: float = 2.0) -> tuple[int, dict | None]:
    """GET ``url``; return (status, parsed JSON or None). Status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
            body = r.read()
            return r.status, (json.loads(body) if body else None)
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def is_triton(http_url: str) -> bool:
    """True only if ``http_url`` is a ready Triton server (not merely something listening on that port).

    Checks ``/v2/health/ready`` and that the server metadata at ``/v2`` names itself ``triton``.
    """
    status, _ = http_get_json(f"{http_url}/v2/health/ready")
    if status != 200:
        return False
    status, meta = http_get_json(f"{http_url}/v2")
    return status == 200 and isinstance(meta, dict) and meta.get("name") == "triton"


def build_mismatch(http_url: str, repository: Path = CPU_REPOSITORY) -> str | None:
    """Why the server at ``http_url`` does not serve this build of ``repository`` (one line), or None.

    Triton keeps the models it loaded, so a server started before the last ``make repo`` serves older code or
    weights; each generated config carries the hash of its model's files, which the server echoes back.
    """
    from tritonserving.repository import BUILD_HASH_KEY, read_parameters

    configs = sorted(Path(repository).glob("*/config.pbtxt"))
    if not configs:
        return f"{repository} holds no model: run `make repo` first"
    for config in configs:
        model = config.parent.name
        want = read_parameters(config).get(BUILD_HASH_KEY, "")
        status, served = http_get_json(f"{http_url}/v2/models/{model}/config")
        if status != 200 or not isinstance(served, dict):
            return f"{model} is not served at {http_url} (HTTP {status})"
        got = served.get("parameters", {}).get(BUILD_HASH_KEY, {}).get("string_value", "")
        if got != want:
            return f"{model} at {http_url} serves build {got or '(none)'}, this build is {want}"
    return None


@dataclass
class NativeTriton:
    """One tritonserver process serving ``repository`` on loopback; a context manager that stops it."""

    repository: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_file: Path | None = None
    address: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def command(self, staging: Path) -> list[str]:
        """The tritonserver command line (also printed by ``make serve``)."""
        return [
            str(staging / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={staging / 'backends'}",
            f"--cache-directory={staging / 'caches'}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=10",
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> NativeTriton:
        """Start the server and wait until ``/v2/health/ready`` answers 200 (all models loaded)."""
        if not Path(self.repository).is_dir():
            raise NativeServerError(
                f"model repository {self.repository} does not exist; run `make repo` first"
            )
        staging = stage()
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.command(staging),
                env=server_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the python backend stubs too
            )
        finally:
            if self.log_file:
                log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NativeServerError(
                    f"tritonserver exited with code {self.proc.returncode} while starting; "
                    f"see {self.log_file or 'its log (pass log_file)'}: {self.log_tail()}"
                )
            status, _ = http_get_json(f"{self.http_url}/v2/health/ready", timeout=1.0)
            if status == 200:
                return self
            time.sleep(0.5)
        self.stop()
        raise NativeServerError(f"tritonserver not ready within {timeout:.0f}s; see {self.log_file}")

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of the log, for one-line error messages."""
        if not self.log_file or not Path(self.log_file).exists():
            return ""
        text = Path(self.log_file).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT (graceful shutdown, which also ends the stubs), then SIGKILL on the group if stuck."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> NativeTriton:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def triton_endpoint(
    http_url: str | None = None,
    grpc_url: str | None = None,
    repository: Path = CPU_REPOSITORY,
    log_dir: Path | None = None,
    quiet: bool = False,
) -> Iterator[tuple[str, str]]:
    """(http host:port, grpc host:port) of a Triton to talk to, for the duration of a ``with`` block.

    Given URLs are used as they are. Otherwise a server on the compose ports (127.0.0.1:8000/8001) is reused
    if it really is Triton and serves this build of ``repository``; failing that the native server is started
    on free ports and stopped after: so ``triton-compare`` and ``perf`` work with zero flags, with or without
    ``docker compose up``, and never measure a stale server by accident.
    """
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if http_url:
        host = http_url.split("://", 1)[-1].rsplit(":", 1)[0]
        yield http_url.split("://", 1)[-1], grpc_url or f"{host}:{DEFAULT_GRPC_PORT}"
        return
    compose_http = f"127.0.0.1:{DEFAULT_HTTP_PORT}"
    if is_triton(f"http://{compose_http}"):
        stale = build_mismatch(f"http://{compose_http}", repository)
        if stale is None:
            say(f"using the Triton server already running at {compose_http} (compose or `make serve`)")
            yield compose_http, grpc_url or f"127.0.0.1:{DEFAULT_GRPC_PORT}"
            return
        say(f"not reusing the Triton at {compose_http}: {stale}")
    log = None
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log = Path(log_dir) / "tritonserver.log"
    server = NativeTriton(Path(repository), log_file=log)
    t0 = time.monotonic()
    say(f"starting the native tritonserver (CPU) on {server.http_url} with {repository} ...")
    with server:
        say(f"tritonserver ready in {time.monotonic() - t0:.1f}s (log: {log or 'not kept'})")
        yield server.http_url.removeprefix("http://"), server.grpc_url
    say("tritonserver stopped")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The server and forms arguments of every client command (``triton-compare``, ``perf``)."""
    parser.add_argument(
        "--http-url",
        default=None,
        help="Triton HTTP host:port (default: 127.0.0.1:8000 if it is Triton serving this build, otherwise "
        "a native server is started for the run)",
    )
    parser.add_argument("--grpc-url", default=None, help="Triton gRPC host:port (default: HTTP host, 8001)")
    parser.add_argument(
        "--repository",
        type=Path,
        default=CPU_REPOSITORY,
        help="repository of the native server started when no server is given",
    )
    parser.add_argument("--forms", nargs="*", default=None, help="forms (default: every loaded minilm_*)")


@contextmanager
def served_forms_at(args: argparse.Namespace, log_dir: Path | None) -> Iterator[tuple[str, str, list[str]]]:
    """(http, grpc, forms) for a ``with`` block: the server of ``add_server_arguments``, found or started.

    Forms are ``--forms`` or every READY form the server lists (ids in; not their ``_text`` models).
    Raises ``ClientError`` when none is served.
    """
    from tritonserving.client import ClientError, served_forms

    with triton_endpoint(args.http_url, args.grpc_url, args.repository, log_dir=log_dir) as (http, grpc):
        forms = args.forms or served_forms(http)
        if not forms:
            raise ClientError(f"no minilm_* model is READY at {http}; is the repository generated?")
        yield http, grpc, forms


# ---------------------------------------------------------------------------------------------- CLI: serve
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``triton-serving serve``."""
    parser.add_argument(
        "--repository",
        type=Path,
        default=CPU_REPOSITORY,
        help="model repository to serve (default: build/repository-cpu)",
    )
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default 8001)")
    parser.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="metrics port (default 8002)"
    )
    parser.add_argument("--address", default="127.0.0.1", help="listen address (default loopback only)")
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print the command and environment it needs, then exit (to run it by hand)",
    )


def run(args: argparse.Namespace) -> int:
    """``make serve``: stage the server and replace this process with it (foreground; Ctrl-C stops it)."""
    try:
        staging = stage()
        server = NativeTriton(
            Path(args.repository), args.http_port, args.grpc_port, args.metrics_port, address=args.address
        )
        if not server.repository.is_dir():
            raise NativeServerError(
                f"model repository {server.repository} does not exist; run `make repo` first"
            )
        cmd = server.command(staging)
        env = server_env()
    except NativeServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_env:
        print(f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}")
        print(f"PATH={env['PATH']}")
        print(" ".join(cmd))
        return 0
    print(
        f"tritonserver (native, CPU) serving {server.repository}: HTTP {server.http_url}, "
        f"gRPC {server.grpc_url}, metrics :{server.metrics_port}. Ctrl-C stops it.",
        flush=True,
    )
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
