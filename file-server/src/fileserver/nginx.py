"""Run Debian's native nginx in the foreground from a folder-local prefix, with our one server config.

The generated main conf only holds process-level settings (user, workers, pid, temp paths, error log) and
``include``s ``nginx/fileserver.conf`` — the very file the container mounts — so that tests and CI
exercise the same server behaviour users get from ``docker compose up``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: nginx/fileserver.conf of the source tree (editable install); an installed copy is shipped as package data
_CANDIDATES = [
    PACKAGE_DIR.parent.parent / "nginx" / "fileserver.conf",
    PACKAGE_DIR / "data" / "fileserver.conf",
]
HEALTH_BODY = b"fileserver ok\n"


class NginxError(RuntimeError):
    """nginx is missing, the config is invalid, or the server did not come up; the message says what to do."""


def server_conf_path() -> Path:
    """Locate the shared server block (``nginx/fileserver.conf``)."""
    for cand in _CANDIDATES:
        if cand.is_file():
            return cand
    raise NginxError("nginx/fileserver.conf not found; run from a checkout of the file-server folder")


def nginx_binary() -> str:
    """Path of the nginx executable (``$NGINX_BIN``, PATH, /usr/sbin), with an install hint."""
    found = (
        os.environ.get("NGINX_BIN") or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    )
    if not found:
        raise NginxError(
            "nginx not found: install it with 'apt-get install -y nginx' ('make install' does, as root)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now (bind to port 0), so parallel runs never collide."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`NginxError` in one line if something already listens on ``host:port``.

    nginx would only say so in its error log after a failed start; binding first (with SO_REUSEADDR, as
    nginx does, so a port in TIME_WAIT counts as free) names the problem before anything is started.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NginxError(
                    f"port {port} on {host} is taken (another 'fileserver serve' or another server); "
                    "stop it or pass another --port"
                ) from None
            raise NginxError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


_PR_SET_PDEATHSIG = 1


def die_with_parent(signo: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the kernel send ``signo`` to the child when its parent dies.

    This is what keeps nginx from outliving a SIGKILLed ``fileserver serve`` (or test run, or demo): no
    Python code runs on SIGKILL, but the kernel still signals the child. SIGTERM is nginx's fast shutdown:
    the master stops its workers and closes the port. Linux sends it when the *thread* that started the
    child exits, so servers are started from the main thread. libc is loaded here, before the fork.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(signo), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect: nobody would stop us
            os._exit(1)

    return preexec


def _readable_by_others(root: Path) -> str | None:
    """Return a reason if an unprivileged nginx worker could not read ``root`` (a 0700 folder on the path)."""
    p = root.resolve()
    for d in [p, *p.parents]:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            return f"{d} is not searchable by other users (mode {stat.filemode(mode)})"
    if not p.stat().st_mode & stat.S_IROTH:
        return f"{p} is not readable by other users"
    return None


def _worker_user() -> str:
    """As root, run workers as an unprivileged user (nobody) rather than root; otherwise nginx ignores it."""
    for name, group in (("nobody", "nogroup"), ("nobody", "nobody")):
        try:
            pwd.getpwnam(name)
            import grp

            grp.getgrnam(group)
            return f"user {name} {group};"
        except KeyError:
            continue
    return ""


@dataclass
class NativeNginx:
    """One native nginx serving ``root`` on ``host:port``; ``prefix`` holds its conf, pid, temp and logs.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``netns`` runs it inside a network
    namespace (``ip netns exec``) for the "another network" test.
    """

    root: Path
    prefix: Path
    host: str = "127.0.0.1"
    port: int = 0
    workers: str = "auto"
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def write_conf(self) -> Path:
        """Write ``<prefix>/conf/nginx.conf`` and ``fileserver-site.conf``; return the main conf path."""
        if not self.port:
            self.port = free_port(self.host if self.netns is None else "127.0.0.1")
        self.root = self.root.resolve()
        self.prefix = self.prefix.resolve()
        for sub in ("conf", "logs", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        user = ""
        if os.geteuid() == 0:
            reason = _readable_by_others(self.root)
            if reason:
                raise NginxError(
                    f"nginx workers (user nobody) cannot read the pool: {reason}; "
                    "put the pool under a world-readable folder"
                )
            user = _worker_user()
        conf_dir = self.prefix / "conf"
        shutil.copyfile(server_conf_path(), conf_dir / "fileserver.conf")
        (conf_dir / "fileserver-site.conf").write_text(
            f"listen {self.host}:{self.port};\nroot {self.root};\naccess_log {self.access_log} fileserver;\n"
        )
        temp = self.prefix / "temp"
        main = conf_dir / "nginx.conf"
        main.write_text(
            "# generated by fileserver.nginx: process settings only; the server is conf/fileserver.conf\n"
            f"{user}\n"
            f"worker_processes {self.workers};\n"
            f"pid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.error_log} notice;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"    client_body_temp_path {temp / 'body'};\n"
            f"    proxy_temp_path {temp / 'proxy'};\n"
            f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
            f"    scgi_temp_path {temp / 'scgi'};\n"
            "    include fileserver.conf;\n"
            "}\n"
        )
        return main

    def command(self) -> list[str]:
        """The exact foreground command: ``nginx -p <prefix> -c <conf> -e <log> -g 'daemon off;'``."""
        main = self.prefix / "conf" / "nginx.conf"
        cmd = [
            nginx_binary(),
            "-p",
            f"{self.prefix}/",
            "-c",
            str(main),
            "-e",
            str(self.error_log),
            "-g",
            "daemon off;",
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def check_config(self) -> None:
        """``nginx -t`` on the generated conf, turning a failure into a readable :class:`NginxError`."""
        cmd = [c for c in self.command() if c not in ("-g", "daemon off;")] + ["-t", "-q"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise NginxError(f"nginx rejected the config: {res.stderr.strip()}")

    def start(self, timeout: float = 15.0) -> NativeNginx:
        """Start nginx and wait until ``/healthz`` answers with our body (not any server on the port)."""
        self.write_conf()
        if self.netns is None:  # inside a namespace the address is not ours to probe from here
            check_port_free(self.host, self.port)
        self.check_config()
        # a session of its own: a terminal's Ctrl-C reaches only us, and we stop nginx in order
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        try:
            self._wait_healthy(timeout)
        except BaseException:  # not up in time, or interrupted (Ctrl-C, SIGTERM) while waiting
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NginxError(f"nginx exited with {self.proc.returncode}: {self._error_tail()}")
            if self.netns is not None:
                if self._netns_healthy():
                    return
            elif is_fileserver(self.url):
                return
            time.sleep(0.05)
        raise NginxError(f"nginx did not answer on {self.url} within {timeout:.0f}s: {self._error_tail()}")

    def _netns_healthy(self) -> bool:
        probe = (
            "from fileserver.nginx import is_fileserver\n"
            f"raise SystemExit(0 if is_fileserver({self.url!r}) else 1)"
        )
        res = subprocess.run(
            ["ip", "netns", "exec", self.netns or "", sys.executable, "-c", probe], capture_output=True
        )
        return res.returncode == 0

    def _error_tail(self) -> str:
        try:
            return " | ".join(self.error_log.read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no error log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGQUIT lets workers finish), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> NativeNginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_fileserver(base_url: str, timeout: float = 1.0) -> bool:
    """True if ``base_url`` is our nginx (``/healthz`` answers ``fileserver ok``), not some other server."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/healthz", timeout=timeout) as resp:  # noqa: S310
            return resp.status == 200 and resp.read() == HEALTH_BODY
    except OSError:
        return False
