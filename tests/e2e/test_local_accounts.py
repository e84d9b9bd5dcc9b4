"""Who loopback trusts, end to end: other local accounts are strangers; the secret file's owner is the operator.

Real processes: a Maestro and peer1 run as root on 127.0.0.1; the network's secret file belongs
to a throwaway account `operator` (mode 0600), and a second throwaway account `other` stands
for any other user of the machine. `other`, with no token, tries what a review found it could
do over loopback: make peer1 refresh, replace peer1's directory entry, overwrite one of peer1's
files (root's). Each is refused; with the operator's token each is accepted; `operator` itself
needs no token (docs/security.md, "Who loopback trusts"). Root only (useradd); the accounts
are removed afterwards.

REST calls run `curl` as the account (runuser). The CLI runs as the account too: the project's
interpreter lives where other accounts cannot read it, so a root process imports the CLI, then
drops to the account for good (setgroups, setgid, setuid) before it opens a single socket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from common.security import ensure_secret, operator_token, read_secret
from tests.e2e.attacks import EVIL, forged_entry
from tests.support import ROOT, Node, node_configs, wait_until, write_nodes

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("useradd") and shutil.which("runuser") and shutil.which("curl")),
    reason="needs root, useradd, runuser and curl to act as throwaway local accounts",
)

ORIGINAL = b"uno\n"
FORGED = forged_entry()

AS_ACCOUNT = """
import os, sys
from client import cli
import client.transfer, grpc, requests  # what the CLI imports lazily, while the interpreter's files are readable
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
sys.exit(cli.main(sys.argv[3:]))
"""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict


@dataclass
class Machine:
    nodes: dict[str, Node]
    token: str
    operator: Account
    other: Account
    folder: Path  # readable by every account: the files they upload, their home

    def curl(self, who: Account, method: str, url: str, body: dict | None = None, token: str = "") -> Answer:
        argv = ["runuser", "-u", who.name, "--", "curl", "-s", "--noproxy", "*", "-X", method, "-w", "\n%{http_code}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        if token:
            argv += ["-H", f"Authorization: Bearer {token}"]
        out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=30, cwd=self.folder).stdout
        text, _, status = out.rpartition("\n")
        return Answer(int(status), json.loads(text) if text.strip() else {})

    def client(self, who: Account, *args: str, token: str = "") -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.folder), "PYTHONPATH": str(ROOT)}
        if token:
            env["P2P_TOKEN"] = token
        maestro = self.nodes["maestro"].url
        return subprocess.run(
            [sys.executable, "-c", AS_ACCOUNT, str(who.uid), str(who.gid), "--maestro", maestro, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.folder,
            env=env,
        )

    def upload(self, who: Account, name: str, data: bytes, *flags: str, token: str = "") -> subprocess.CompletedProcess:
        source = self.folder / f"{who.name}-{name}"
        source.write_bytes(data)
        source.chmod(0o644)
        peer1 = self.nodes["peer1"].url
        return self.client(who, "upload", str(source), "--to", peer1, "--name", name, *flags, token=token)

    def shared(self, name: str) -> Path:
        return Path(self.nodes["peer1"].config.shared_dir) / name

    def holders(self) -> list[tuple[str, str, str]]:
        import requests

        resp = requests.get(self.nodes["maestro"].url + "/locate", params={"file": "archivo1.txt"}, timeout=5)
        return [(h["name"], h["rest_url"], h["sha256"]) for h in resp.json().get("peers", [])]


def make_account(role: str) -> Account:
    name = f"p2p{role}{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    import pwd

    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def remove_account(account: Account) -> None:
    subprocess.run(["userdel", account.name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def accounts() -> Iterator[tuple[Account, Account]]:
    """Two throwaway accounts: `operator` (owns the network's secret file) and `other`; removed afterwards."""
    made: list[Account] = []
    try:
        made.append(make_account("op"))
        made.append(make_account("other"))
        yield made[0], made[1]
    finally:
        for account in made:
            remove_account(account)


def operators_secret(folder: Path, operator: Account) -> Path:
    """The network's secret file, owned by the operator's account (nodes run as root, who reads it)."""
    secret = folder / ".p2p-secret"
    ensure_secret(secret)
    os.chown(secret, operator.uid, operator.gid)
    return secret


def with_security(configs: dict, secret: Path, **fields) -> dict:
    return {n: replace(c, security=replace(c.security, secret_file=str(secret), **fields)) for n, c in configs.items()}


@pytest.fixture(scope="module")
def machine(accounts, tmp_path_factory) -> Iterator[Machine]:
    operator, other = accounts
    nodes: dict[str, Node] = {}
    folder = Path(tempfile.mkdtemp(prefix="p2p-accounts-"))
    try:
        folder.chmod(0o777)
        tmp = tmp_path_factory.mktemp("accounts")
        secret = operators_secret(tmp, operator)
        configs = with_security(node_configs(tmp, ["peer1"]), secret)
        (Path(configs["peer1"].shared_dir) / "archivo1.txt").write_bytes(ORIGINAL)
        nodes = write_nodes(tmp, configs)
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_healthy()
        m = Machine(nodes, operator_token(read_secret(secret)), operator, other, folder)
        wait_until(m.holders, what="peer1's registration")
        yield m
    finally:
        for node in reversed(list(nodes.values())):
            node.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_another_local_account_without_a_token_changes_nothing(machine):
    before = machine.holders()
    refresh = machine.curl(machine.other, "POST", machine.nodes["peer1"].url + "/refresh")
    assert (refresh.status, refresh.body.get("error")) == (401, "Unauthorized"), refresh
    register = machine.curl(machine.other, "POST", machine.nodes["maestro"].url + "/register", FORGED)
    assert (register.status, register.body.get("error")) == (401, "Unauthorized"), register
    assert machine.holders() == before

    upload = machine.upload(machine.other, "archivo1.txt", EVIL, "--overwrite")
    assert upload.returncode == 7, upload.stderr
    assert "not a member of this network" in upload.stderr
    assert machine.shared("archivo1.txt").read_bytes() == ORIGINAL


def test_another_local_account_with_the_operators_token_is_the_operator(machine):
    token = machine.token
    refresh = machine.curl(machine.other, "POST", machine.nodes["peer1"].url + "/refresh", token=token)
    assert refresh.status == 200, refresh
    upload = machine.upload(machine.other, "from-other.txt", b"with the token\n", token=token)
    assert upload.returncode == 0, upload.stderr
    assert machine.shared("from-other.txt").read_bytes() == b"with the token\n"


def test_the_secret_files_owner_and_root_need_no_token(machine):
    refresh = machine.curl(machine.operator, "POST", machine.nodes["peer1"].url + "/refresh")
    assert refresh.status == 200, refresh
    upload = machine.upload(machine.operator, "from-owner.txt", b"the owner\n")
    assert upload.returncode == 0, upload.stderr
    assert machine.shared("from-owner.txt").read_bytes() == b"the owner\n"
    root = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         machine.nodes["peer1"].url + "/refresh"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert root.stdout == "200"


def test_a_trusted_network_trusts_other_machines_by_address_and_this_one_by_account(accounts, tmp_path):
    """trusted_networks holds a LAN: a caller from another machine on it is the operator; on this
    machine, calling over its own LAN address, only the owner is (the stranger's namespace plays
    the other machine)."""
    from tests.e2e.stranger import Stranger

    if Stranger.available() is not None:
        pytest.skip(f"needs a network namespace: {Stranger.available()}")
    operator, other = accounts
    with Stranger(prefix="p2p17", subnet="10.217") as lan:
        secret = operators_secret(tmp_path, operator)
        trusted = [f"{lan.host_address.rsplit('.', 1)[0]}.0/24"]  # both ends of the veth
        configs = with_security(node_configs(tmp_path, [], host=lan.host_address), secret, trusted_networks=trusted)
        maestro = write_nodes(tmp_path, configs)["maestro"]
        try:
            maestro.start().wait_healthy()
            m = Machine({"maestro": maestro}, "", operator, other, tmp_path)
            entry = forged_entry("peerx")
            remote = lan.http("POST", maestro.url + "/register", json=entry)
            assert remote.get("status") == 200, remote  # another machine on the trusted network: by address
            refused = m.curl(other, "POST", maestro.url + "/register", entry)
            assert (refused.status, refused.body.get("error")) == (401, "Unauthorized"), refused
            assert m.curl(operator, "POST", maestro.url + "/register", entry).status == 200
        finally:
            maestro.stop()
