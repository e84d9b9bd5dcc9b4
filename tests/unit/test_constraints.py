"""constraints.txt (every transitive pin, `make constraints`) agrees with requirements*.txt."""

from __future__ import annotations

import re

from tests.support import ROOT


def pins(path) -> dict[str, str]:
    """name -> version of each `name==version` line (names normalised as pip does)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*==\s*([^\s#;]+).*", line):
            found[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return found


def test_every_direct_pin_is_in_the_constraints_with_the_same_version():
    constraints = pins(ROOT / "constraints.txt")
    direct = {**pins(ROOT / "requirements.txt"), **pins(ROOT / "requirements-dev.txt")}
    stale = {name: (version, constraints.get(name)) for name, version in direct.items()
             if constraints.get(name) != version}  # fmt: skip
    assert not stale, f"run `make constraints`: requirements pin != constraints.txt for {stale}"
