"""Each make target asks only for the Debian tools it runs (scripts/need.sh COMMAND=PACKAGE ...)."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = (Path(__file__).resolve().parent.parent / "Makefile").read_text()


def needs(target: str) -> set[str]:
    """The commands the recipe of ``target`` asks scripts/need.sh for (TEST_TOOLS expanded)."""
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)*)", MAKEFILE, re.M)
    assert recipe, f"no target {target}"
    text = recipe[1].replace("$(TEST_TOOLS)", MAKEFILE.split("TEST_TOOLS :=", 1)[1].split("\n", 1)[0])
    return set(re.findall(r"(\w+)=\w+", " ".join(ln for ln in text.splitlines() if "$(NEED)" in ln)))


def test_each_target_needs_only_what_it_runs() -> None:
    # curl: the suite runs the demo; ip: only as root, for the namespace tests
    assert needs("install") == {"nginx", "sha256sum", "curl", "ip"}
    assert needs("demo") == {"nginx", "curl", "sha256sum"}  # the demo shows the curl + sha256sum recipe
    assert needs("serve") == {"nginx"}
    assert needs("bench") == {"nginx", "wrk", "aria2c"}


def test_the_demo_still_calls_curl() -> None:
    """If the demo stops using curl, `make demo` must stop asking for it."""
    demo = (Path(__file__).resolve().parent.parent / "src" / "fileserver" / "demo.py").read_text()
    assert "curl -fsS" in demo
