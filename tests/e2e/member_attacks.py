"""Members using their credentials against others, replayed against a real network (docs/security.md).

`python -m tests.e2e.member_attacks` (root) brings up a Maestro and three peers listening on the
root-namespace end of a veth, with the network's folder (topology.yaml and its secret) as the
operator keeps it. A stranger's namespace plays a member gone bad and whoever holds a leaked
credential: it holds peer2's and peer9's credentials (a member's), a stolen copy of peer3's, and
a leaked operator token, but never the secret; it runs its own HTTP and gRPC servers, which keep
every credential shown to them. The operator's CLI runs from the network's folder, with nothing
but what it finds there. The root namespace stands for the operator's machine: its address is
in trusted_networks, as loopback is on one machine.

Each attack prints REFUSED or SUCCEEDED with its evidence; tests/e2e/test_member_attacks.py
asserts every one is refused and that the network still works. The same code measured the
"before" on the code without these defences (it degrades where a feature is missing).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import requests
import yaml

from common.config import Settings
from common.security import ensure_secret, operator_token, peer_token, read_secret
from tests.e2e.attacks import Check, Outcome, Report  # one report shape for both rounds of attacks
from tests.e2e.stranger import ROOT, Stranger
from tests.support import Node, node_configs, wait_until, write_nodes

PREFIX, SUBNET = "p2pcr", "10.231"  # this suite's namespaces and addresses (tests/e2e/stranger.py)
ORIGINAL = {
    "peer1": {"archivo1.txt": b"uno\n"},
    "peer2": {"archivo2.txt": b"dos\n"},
    "peer3": {"archivo3.txt": b"tres\n"},
}
EVIL = b"the attacker's bytes\n"
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()
LISTENER_PORT, GRPC_PORT = 18091, 18092
MEMBER = "peer9"  # a member of the network gone bad: the stranger holds its credential


@dataclass
class Net:
    nodes: dict[str, Node]
    stranger: Stranger
    folder: Path  # the network's folder: topology.yaml and .p2p-secret, as the operator keeps them
    listener_url: str  # the stranger's HTTP server
    attacker_grpc: str  # the stranger's gRPC server

    @property
    def secret(self) -> bytes:
        return read_secret(self.folder / ".p2p-secret")

    def url(self, node: str) -> str:
        return self.nodes[node].url

    def grpc(self, node: str) -> str:
        return self.nodes[node].config.grpc_address

    @property
    def maestro(self) -> str:
        return self.url("maestro")

    def token(self, principal: str) -> str:
        return operator_token(self.secret) if principal == "@operator" else peer_token(self.secret, principal)

    def bearer(self, principal: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(principal)}"}

    def locate(self, name: str) -> list[dict]:
        resp = requests.get(self.maestro + "/locate", params={"file": name}, timeout=5)
        return resp.json()["peers"] if resp.status_code == 200 else []

    def refresh(self, peer: str) -> None:
        """The real peer re-registers its true entry (the operator asks it to)."""
        requests.post(self.url(peer) + "/refresh", headers=self.bearer("@operator"), timeout=10)

    def operator_cli(self, *args: str) -> subprocess.CompletedProcess:
        """The operator's CLI, run from the network's folder with nothing but what it finds there."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2P_")}
        return subprocess.run(
            [sys.executable, "-m", "peer_app.client", *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=90,
            env={**env, "PYTHONPATH": str(ROOT)},
        )

    def seen(self) -> list[dict]:
        """Every call the stranger's servers received so far, with the credential it carried."""
        return self.stranger.do("seen")["seen"]


def write_topology(net_folder: Path, nodes: dict[str, Node]) -> None:
    """The network's topology.yaml as the operator keeps it beside its secret (what the CLI reads)."""
    maestro = nodes["maestro"].config
    data = {
        "maestro": {"host": maestro.host, "port": maestro.rest_port},
        "peers": [
            {
                "name": n.config.name,
                "host": n.config.host,
                "rest_port": n.config.rest_port,
                "grpc_port": n.config.grpc_port,
                "shared_dir": n.config.shared_dir,
            }
            for name, n in nodes.items()
            if name != "maestro"
        ],  # fmt: skip
        "security": {"secret_file": ".p2p-secret", "read": "open"},
    }
    (net_folder / "topology.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def start_network(stranger: Stranger, folder: Path) -> Net:
    answer = {"results": [], "visited": [MEMBER], "messages": 0, "complete": True}
    listener_url = stranger.do("serve_http", host=stranger.address, port=LISTENER_PORT, routes={"/search": answer})[
        "url"
    ]
    attacker_grpc = stranger.do("serve_grpc", host=stranger.address, port=GRPC_PORT, data_hex=EVIL.hex())["address"]
    secret_file = folder / ".p2p-secret"
    ensure_secret(secret_file)
    trusted = ("127.0.0.0/8", "::1/128", f"{stranger.host_address}/32")  # the operator's machine
    settings = Settings(heartbeat_interval=0.5, request_timeout=1.0)
    configs = node_configs(folder, list(ORIGINAL), settings, host=stranger.host_address)
    configs = {
        name: replace(cfg, security=replace(cfg.security, secret_file=str(secret_file), trusted_networks=trusted))
        for name, cfg in configs.items()
    }
    for peer, files in ORIGINAL.items():
        for fname, data in files.items():
            (Path(configs[peer].shared_dir) / fname).write_bytes(data)
    nodes = write_nodes(folder, configs)
    write_topology(folder, nodes)
    net = Net(nodes, stranger, folder, listener_url, attacker_grpc)
    for node in nodes.values():
        node.start()
    for node in nodes.values():
        node.wait_healthy()
    wait_until(lambda: all(net.locate(f) for fs in ORIGINAL.values() for f in fs), timeout=20, what="registrations")
    return net


def stop_network(net: Net) -> None:
    for node in reversed(list(net.nodes.values())):
        node.stop()


# --- helpers --------------------------------------------------------------------------------------


def _status(answer: dict) -> str:
    if "error" in answer:
        return str(answer["error"])
    body = answer["body"]
    error = body.get("error") if isinstance(body, dict) else None
    return f"{answer['status']}{' ' + error if error else ''}"


def _code(resp: requests.Response) -> str:
    try:
        error = resp.json().get("error")
    except ValueError:
        error = None
    return f"{resp.status_code}{' ' + error if error else ''}"


def _last_line(run: subprocess.CompletedProcess) -> str:
    lines = (run.stderr or run.stdout).strip().splitlines()
    return f"exit {run.returncode}: {lines[-1][:150] if lines else ''}"


def _entry(name: str, grpc: str, rest: str, files: dict[str, str]) -> dict:
    return {
        "name": name,
        "rest_url": rest,
        "grpc_address": grpc,
        "heartbeat_interval": 60,  # the longest a peer may announce: it stays alive through the run
        "files": [{"name": f, "size": len(EVIL), "mtime": 1, "sha256": sha} for f, sha in files.items()],
    }


def _register_member(net: Net) -> dict:
    """peer9, a member, registers its own holder (the stranger's servers) for bait.txt, with its own credential."""
    entry = _entry(MEMBER, net.attacker_grpc, net.listener_url, {"bait.txt": EVIL_SHA})
    answer = net.stranger.http("POST", net.maestro + "/register", json=entry, headers=net.bearer(MEMBER))
    _must(answer, "a member registering itself")
    return answer


def _must(answer: dict, what: str) -> None:
    """The attack's own setup worked (a member acting as itself): otherwise the replay proves nothing."""
    if answer.get("status") != 200:
        raise AssertionError(f"{what} was refused ({answer}): the attack cannot be replayed")


def _credentials_seen(calls: list[dict]) -> list[str]:
    """The principals of the credentials shown, e.g. ["@operator", "maestro"]."""
    found = []
    for call in calls:
        auth = call.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            found.append(auth.split(" ", 1)[1].rpartition(".")[0] or "?")
    return found


# --- the attacks ----------------------------------------------------------------------------------


def forged_entry_swaps_content(net: Net) -> Outcome:
    """Attack 2: peer1's entry re-registered at the attacker's server with the attacker's digest, from the
    operator's machine without a token (a page rebinding to it) and with a leaked operator token; the
    operator then downloads archivo1.txt from the network's folder."""
    out = net.folder / "op-archivo1.txt"
    out.unlink(missing_ok=True)
    forged = _entry("peer1", net.attacker_grpc, net.listener_url, {"archivo1.txt": EVIL_SHA})
    try:
        by_address = _code(requests.post(net.maestro + "/register", json=forged, timeout=5))
        by_token = net.stranger.http("POST", net.maestro + "/register", json=forged, headers=net.bearer("@operator"))
        listed = [p["grpc_address"] for p in net.locate("archivo1.txt")]
        run = net.operator_cli("download", "archivo1.txt", "--out", str(out))
        got = out.read_bytes() if out.exists() else b""
    finally:
        net.refresh("peer1")
    swapped = got == EVIL
    return Outcome(
        "forged-entry-content-swap",
        "a forged registration carries a forged digest; the download trusts it",
        swapped or net.attacker_grpc in listed,
        f"POST /register as peer1: {by_address} by address, {_status(by_token)} with the operator's token; "
        f"download: {'the attacker' if swapped else 'the original' if got else 'no'} bytes, {_last_line(run)}",
    )


def stolen_member_credential_swaps_content(net: Net) -> Outcome:
    """Attack 2 with a stolen member credential (peer3's, not the secret): peer3's entry points at the
    attacker's server with the attacker's digest; the operator downloads archivo3.txt."""
    out = net.folder / "op-archivo3.txt"
    out.unlink(missing_ok=True)
    forged = _entry("peer3", net.attacker_grpc, net.listener_url, {"archivo3.txt": EVIL_SHA})
    try:
        answer = net.stranger.http("POST", net.maestro + "/register", json=forged, headers=net.bearer("peer3"))
        _must(answer, "peer3's credential registering peer3")
        run = net.operator_cli("download", "archivo3.txt", "--out", str(out))
        got = out.read_bytes() if out.exists() else b""
    finally:
        net.refresh("peer3")
    return Outcome(
        "stolen-member-cred-content-swap",
        "a holder that cannot prove itself serves the attacker's bytes as peer3's",
        got == EVIL,
        f"POST /register as peer3 with peer3's credential: {_status(answer)}; download: "
        f"{'the attacker' if got == EVIL else 'the original' if got else 'no'} bytes, {_last_line(run)}",
    )


def operator_token_to_a_member(net: Net) -> Outcome:
    """Attack 3: a member registers its own holder for bait.txt; the operator's CLI, from the network's
    folder, downloads it, searches from that member and uploads to it by name."""
    registered = _register_member(net)
    before = len(net.seen())
    bait = net.folder / "bait.txt"
    bait.unlink(missing_ok=True)
    runs = [
        net.operator_cli("download", "bait.txt", "--out", str(bait)),
        net.operator_cli("search", "archivo", "--peer", MEMBER),
    ]
    mine = net.folder / "mine.txt"
    mine.write_bytes(b"for peer9\n")
    runs.append(net.operator_cli("upload", str(mine), "--to", MEMBER))
    shown = _credentials_seen(net.seen()[before:])
    leaked = "@operator" in shown
    used = ""
    if leaked:  # the member uses it, as the report says: peer3's entry re-registered at its server
        forged = _entry("peer3", net.attacker_grpc, net.listener_url, {"archivo3.txt": EVIL_SHA})
        used = _status(
            net.stranger.http("POST", net.maestro + "/register", json=forged, headers=net.bearer("@operator"))
        )
        net.refresh("peer3")
    return Outcome(
        "operator-token-to-a-member",
        "the operator's CLI shows the operator's token to a holder a member chose",
        leaked,
        f"peer9 registered: {_status(registered)}; download/search/upload: "
        f"{', '.join(str(r.returncode) for r in runs)}; the member's servers saw "
        f"{sorted(set(shown)) or 'no credential'} in {len(net.seen()) - before} call(s)"
        + (f"; re-registering peer3 with it: {used}" if used else ""),
    )


def member_overwrites_another_peers_file(net: Net) -> Outcome:
    """Attack 5: peer2's credential uploads over peer1's file and uses peer1's DummyUpload."""
    target = Path(net.nodes["peer1"].config.shared_dir) / "archivo1.txt"
    metadata = [["authorization", f"Bearer {net.token('peer2')}"]]
    up = net.stranger.do(
        "upload", address=net.grpc("peer1"), name="archivo1.txt", data_hex=EVIL.hex(), overwrite=True, metadata=metadata
    )
    dummy = net.stranger.do("dummy_upload", address=net.grpc("peer1"), size=1 << 16, metadata=metadata)
    changed = target.read_bytes() != ORIGINAL["peer1"]["archivo1.txt"]
    if changed:
        target.write_bytes(ORIGINAL["peer1"]["archivo1.txt"])
        net.refresh("peer1")
    return Outcome(
        "member-writes-another-peer",
        "a member's credential overwrites other peers' files",
        changed or up["code"] == "OK" or dummy["code"] == "OK",
        f"Upload --overwrite to peer1 with peer2's credential: {up['code']}; DummyUpload: {dummy['code']}; "
        f"peer1's archivo1.txt {'REPLACED' if changed else 'unchanged'}",
    )


def member_drives_another_peers_entry(net: Net) -> Outcome:
    """Attack 5: peer2's credential makes peer1 re-register (/refresh) and re-introduce itself (/bootstrap)."""
    headers = net.bearer("peer2")
    answers = {
        path: net.stranger.http("POST", net.url("peer1") + path, headers=headers) for path in ("/refresh", "/bootstrap")
    }
    return Outcome(
        "member-drives-another-entry",
        "a member's credential changes another peer's directory entry",
        any(a.get("status") == 200 for a in answers.values()),
        "; ".join(f"POST peer1{path} with peer2's credential: {_status(a)}" for path, a in answers.items()),
    )


def maestro_lends_its_credential(net: Net) -> Outcome:
    """Attack 9: the live page searches from peer9, whose REST URL is the member's server."""
    _register_member(net)
    before = len(net.seen())
    resp = requests.get(net.maestro + "/ui/search", params={"query": "archivo", "peer": MEMBER}, timeout=10)
    if resp.status_code != 200:
        raise AssertionError(f"/ui/search from peer9 answered {resp.status_code} {resp.text[:200]}: nothing replayed")
    shown = _credentials_seen(net.seen()[before:])
    return Outcome(
        "maestro-lends-its-credential",
        "/ui/search presents the Maestro's credential to a member-chosen URL",
        bool(shown),
        f"GET /ui/search from peer9: {resp.status_code}; "
        f"the member's server saw {sorted(set(shown)) or 'no credential'}",
    )


ATTACKS: list[Callable[[Net], Outcome]] = [
    forged_entry_swaps_content,
    stolen_member_credential_swaps_content,
    operator_token_to_a_member,
    member_overwrites_another_peers_file,
    member_drives_another_peers_entry,
    maestro_lends_its_credential,
]


# --- what must keep working ----------------------------------------------------------------------


def network_works(net: Net) -> list[Check]:
    checks = []
    out = net.folder / "op-archivo2.txt"
    out.unlink(missing_ok=True)
    down = net.operator_cli("download", "archivo2.txt", "--out", str(out))
    ok = out.exists() and out.read_bytes() == ORIGINAL["peer2"]["archivo2.txt"]
    checks.append(Check("operator download (folder)", ok, _last_line(down)))
    mine = net.folder / "operator.txt"
    mine.write_bytes(os.urandom(100_000))
    up = net.operator_cli("upload", str(mine), "--to", "peer3")  # by name: the topology's address
    checks.append(Check("operator upload by name", up.returncode == 0, _last_line(up)))
    own = net.stranger.do(
        "upload", address=net.grpc("peer2"), name="own.txt", data_hex=b"peer2's own\n".hex(),
        metadata=[["authorization", f"Bearer {net.token('peer2')}"]],
    )  # fmt: skip
    checks.append(Check("a peer's own credential, own node", own["code"] == "OK", f"Upload to peer2: {own['code']}"))
    first = {p["name"]: p["last_seen"] for p in requests.get(net.maestro + "/peers", timeout=5).json()["peers"]}

    def beat_again() -> bool:
        now = {p["name"]: p["last_seen"] for p in requests.get(net.maestro + "/peers", timeout=5).json()["peers"]}
        return all(now[n] > first[n] for n in ORIGINAL)

    try:
        wait_until(beat_again, timeout=5, what="a heartbeat from every peer")
        beating = True
    except AssertionError:
        beating = False
    checks.append(Check("peers' heartbeats", beating, "every peer beat again within 5 s"))
    truthful = all(
        [p["grpc_address"] for p in net.locate(f)] == [net.grpc(peer)] for peer, fs in ORIGINAL.items() for f in fs
    )
    checks.append(Check("directory tells the truth", truthful, "every original file at its own peer only"))
    return checks


def run_all(stranger: Stranger, folder: Path) -> Report:
    report = Report()
    net = start_network(stranger, folder)
    try:
        for attack in ATTACKS:
            report.attacks.append(attack(net))
        report.checks += network_works(net)
    finally:
        stop_network(net)
    return report


def main() -> int:
    reason = Stranger.available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with Stranger(PREFIX, SUBNET) as stranger, tempfile.TemporaryDirectory(prefix="p2pcr-attacks-") as tmp:
        report = run_all(stranger, Path(tmp))
    report.show(time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
