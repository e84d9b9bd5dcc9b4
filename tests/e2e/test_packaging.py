"""`pip install -r requirements.txt` installs the `p2p` command, and it works from any folder (docs/api.md).

Done as a newcomer would, in a throwaway virtualenv (never the interpreter running the tests):
a copy of the project (what a fresh clone holds), `pip install -r requirements.txt` from its root,
then `cd elsewhere && p2p --maestro URL download archivo1.txt` against a real network. The
virtualenv sees this interpreter's packages through a .pth file, so the pins are already there;
the project is built with this interpreter's setuptools when it can build editable wheels on its
own (>= 70.1), else pip fetches one for the build, as it does for a newcomer.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, wait_until


def project_copy(target: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files not ignored), copied to target."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def offline_build() -> list[str]:
    """pip options that build the project with this interpreter's setuptools, when it can."""
    try:
        version = tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation", "--no-index"] if version >= (70, 1) else []


def throwaway_venv(folder: Path) -> Path:
    """A virtualenv whose imports fall back to this interpreter's packages; returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]
    Path(purelib, "parent-interpreter.pth").write_text("\n".join(parents) + "\n", encoding="utf-8")
    return folder / "bin"


def test_a_fresh_copy_installs_the_p2p_command_that_works_from_any_folder(network, tmp_path):
    clone = project_copy(tmp_path / "p2pnet")
    bin_dir = throwaway_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "P2P_MAESTRO")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--quiet",
         *offline_build(), "-r", "requirements.txt"],
        cwd=clone, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    p2p = bin_dir / "p2p"
    assert p2p.exists()

    nodes = network(["peer1"], files={"peer1": {"archivo1.txt": b"hola desde peer1\n"}})
    maestro = nodes["maestro"].url
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(p2p), *args], cwd=elsewhere, capture_output=True, text=True, timeout=60, env=env)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("p2p "), version.stderr
    wait_until(lambda: run("--maestro", maestro, "locate", "archivo1.txt").returncode == 0, what="registration")
    got = run("--maestro", maestro, "download", "archivo1.txt")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("downloaded archivo1.txt: 17 B in "), got.stdout
    assert (elsewhere / "archivo1.txt").read_bytes() == b"hola desde peer1\n"
    # The command runs the copy's code (editable install), not the checkout running these tests.
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import client; print(client.__file__)"],
        cwd=elsewhere, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert where.stdout.strip() == str(clone / "client" / "__init__.py"), where
    # And `python -m peer_app.client` from the project's root is the same program.
    module = subprocess.run(
        [str(bin_dir / "python"), "-m", "peer_app.client", "--version"],
        cwd=clone, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert module.stdout == version.stdout
