""" "Another machine, another network": nginx and the client in separate network namespaces, routed.

Topology (all inside 10.200.0.0/16, which is blackholed in the root namespace first so that no test packet
can ever leave the machine):

    [server ns] 10.200.S.2/24 --veth-- 10.200.S.1 [router ns, ip_forward=1]
                                        10.200.C.1 [router ns] --veth-- 10.200.C.2/24 [client ns]

Names and subnets derive from the pid, so reruns and parallel runs do not collide.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import make_hostile_pool, missing_prerequisite, world_readable_tmp

from fileserver.manifest import parse_sums
from fileserver.nginx import NativeNginx


@pytest.fixture(autouse=True)
def root_and_iproute2() -> None:
    if os.geteuid() != 0:
        missing_prerequisite("network namespaces need root: run 'sudo .venv/bin/pytest' (CI runs as root)")
    if shutil.which("ip") is None:
        missing_prerequisite("ip not found: 'make install' as root installs iproute2")


BLACKHOLE = "10.200.0.0/16"


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    res = subprocess.run(full, capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed: {res.stderr.strip()}")
    return res


def test_client_on_another_network_downloads_and_verifies_everything() -> None:
    pid = os.getpid()
    tag = f"fs{pid % 100000}"
    srv_ns, rtr_ns, cli_ns = f"{tag}-srv", f"{tag}-rtr", f"{tag}-cli"
    k = pid % 120
    s_net, c_net = 2 * k + 2, 2 * k + 3  # 10.200.<even>.0/24 for the server, <odd> for the client
    server_ip, client_ip = f"10.200.{s_net}.2", f"10.200.{c_net}.2"
    had_blackhole = BLACKHOLE in sh("ip", "route", "show", BLACKHOLE, check=False).stdout
    base = world_readable_tmp("fileserver-netns-")
    server: NativeNginx | None = None
    try:
        sh(
            "ip", "route", "replace", "blackhole", BLACKHOLE
        )  # first: nothing can leave through the default route
        for ns in (srv_ns, rtr_ns, cli_ns):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        for side, ns, net in (("s", srv_ns, s_net), ("c", cli_ns, c_net)):
            inner, outer = f"{tag}{side}0", f"{tag}{side}1"
            sh(
                "ip",
                "link",
                "add",
                inner,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                outer,
                "netns",
                rtr_ns,
            )
            sh("ip", "addr", "add", f"10.200.{net}.2/24", "dev", inner, ns=ns)
            sh("ip", "link", "set", inner, "up", ns=ns)
            sh("ip", "route", "add", "default", "via", f"10.200.{net}.1", ns=ns)
            sh("ip", "addr", "add", f"10.200.{net}.1/24", "dev", outer, ns=rtr_ns)
            sh("ip", "link", "set", outer, "up", ns=rtr_ns)
        sh("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", ns=rtr_ns)  # per-namespace; no procps needed
        # the client really is on another subnet: its only way to the server is through the router
        routes = sh("ip", "route", "get", server_ip, ns=cli_ns).stdout
        assert f"via 10.200.{c_net}.1" in routes, routes

        pool = make_hostile_pool(base, count=200)
        entries = parse_sums((pool / "SHA256SUMS").read_text())
        server = NativeNginx(
            root=pool, prefix=base / "nginx", host=server_ip, port=8080, netns=srv_ns
        ).start()
        out = base / "download"
        res = sh(
            sys.executable,
            "-m",
            "fileserver",
            "fetch",
            server.url,
            "--out",
            str(out),
            "-j",
            "4",
            "-q",
            ns=cli_ns,
            check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"verified {len(entries)}/{len(entries)} files" in res.stdout
        assert sh(sys.executable, "-m", "fileserver", "verify", str(out), check=False).returncode == 0

        log = server.access_log.read_text().splitlines()
        file_lines = [ln for ln in log if '.txt HTTP/1.1" 200' in ln]
        assert len(file_lines) >= len(entries)
        seen = {ln.split(" ", 1)[0] for ln in log}
        assert seen == {client_ip}, (
            f"nginx saw {seen}, expected only the client {client_ip} from the other subnet"
        )
        assert all(re.match(rf"^{re.escape(client_ip)} \[", ln) for ln in file_lines)
    finally:
        if server is not None:
            server.stop()
        for ns in (cli_ns, rtr_ns, srv_ns):  # deleting a namespace deletes its veth ends
            sh("ip", "netns", "del", ns, check=False)
        if not had_blackhole:
            sh("ip", "route", "del", "blackhole", BLACKHOLE, check=False)
        shutil.rmtree(base, ignore_errors=True)
    assert not any(tag in ln for ln in sh("ip", "netns", "list").stdout.splitlines())
