"""The security review's findings (docs/security.md), replayed by a stranger from a network namespace.

`python -m tests.e2e.attacks` (root) brings up a Maestro and three peers listening on the
root-namespace end of a veth, runs every attack from the stranger's address, checks what the
operator and the peers themselves can still do over that non-loopback address, and prints one
line per attack: REFUSED or SUCCEEDED with its evidence. tests/e2e/test_attacks.py asserts the
same list is all refused. The same code measured the "before" (on the code before members-only).

The network: peer1 (friends peer2, `rogue`), peer2 (peer3, peer1), peer3 (peer1, `broken`),
where `rogue` and `broken` are fake peers the stranger runs at its own address: a member that
lies in its search answers and one that answers nonsense. They stand for a compromised host
among the configured friends: their answers must be dropped, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import requests

from common.config import Friend, NodeConfig, Settings
from tests.e2e.stranger import ROOT, Stranger
from tests.support import Node, metric_value, node_configs, wait_until, write_nodes

ORIGINAL = {
    "peer1": {"archivo1.txt": b"uno\n"},
    "peer2": {"archivo2.txt": b"dos\n"},
    "peer3": {"archivo3.txt": b"tres\n"},
}
EVIL = b"the attacker's bytes\n"
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()
ROGUE_PORT, BROKEN_PORT, LISTENER_PORT, GRPC_PORT = 18081, 18082, 18083, 18084


def forged_entry(name: str = "peer1", file: str = "archivo1.txt") -> dict:
    """A Maestro registration of peer name at the attacker's addresses, advertising the attacker's bytes as file."""
    return {
        "name": name,
        "rest_url": "http://127.0.0.1:1",
        "grpc_address": "127.0.0.1:2",
        "files": [{"name": file, "size": len(EVIL), "mtime": 1.7e9, "sha256": EVIL_SHA}],
    }


@dataclass
class Outcome:
    attack: str
    finding: str
    succeeded: bool
    evidence: str


@dataclass
class Check:
    what: str
    ok: bool
    evidence: str


@dataclass
class Report:
    attacks: list[Outcome] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{'SUCCEEDED' if o.succeeded else 'refused  '}  {o.attack:<34} {o.evidence}" for o in self.attacks]
        out += [f"{'works    ' if c.ok else 'BROKEN   '}  {c.what:<34} {c.evidence}" for c in self.checks]
        return out

    def show(self, seconds: float) -> None:
        """Print every line and the summary a person reads first."""
        print("\n".join(self.lines()))
        won = sum(o.succeeded for o in self.attacks)
        print(
            f"{won} of {len(self.attacks)} attacks succeeded; "
            f"{sum(c.ok for c in self.checks)} of {len(self.checks)} checks work; {seconds:.1f}s"
        )


# --- the network's credentials (absent before members-only) -------------------------------------------


def _security():
    try:
        from common import security
    except ImportError:
        return None
    return security


def secure(configs: dict[str, NodeConfig], secret_file: Path) -> dict[str, NodeConfig]:
    """Give every node the network's secret file (a no-op on code without credentials)."""
    security = _security()
    if security is None or "security" not in {f.name for f in fields(NodeConfig)}:
        return configs
    security.ensure_secret(secret_file)
    return {
        name: replace(cfg, security=replace(cfg.security, secret_file=str(secret_file)))
        for name, cfg in configs.items()
    }


def operator_headers(secret_file: Path) -> dict[str, str]:
    security = _security()
    if security is None or not secret_file.exists():
        return {}
    return {"Authorization": f"Bearer {security.operator_token(security.read_secret(secret_file))}"}


def peer_token(secret_file: Path, name: str) -> str:
    security = _security()
    if security is None or not secret_file.exists():
        return ""
    return security.peer_token(security.read_secret(secret_file), name)


# --- the network ---------------------------------------------------------------------------------


@dataclass
class Net:
    nodes: dict[str, Node]
    stranger: Stranger
    tmp: Path
    secret_file: Path
    rogue_url: str
    broken_url: str
    listener_url: str
    attacker_grpc: str

    def url(self, node: str) -> str:
        return self.nodes[node].url

    def grpc(self, node: str) -> str:
        return self.nodes[node].config.grpc_address

    @property
    def maestro(self) -> str:
        return self.url("maestro")

    def op(self) -> dict[str, str]:
        return operator_headers(self.secret_file)

    def locate(self, name: str) -> list[dict]:
        resp = requests.get(self.maestro + "/locate", params={"file": name}, headers=self.op(), timeout=5)
        return resp.json()["peers"] if resp.status_code == 200 else []

    def known_urls(self, node: str) -> list[str]:
        return [p["url"] for p in requests.get(self.url(node) + "/peers", headers=self.op(), timeout=5).json()["peers"]]

    def client(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        token = self.op().get("Authorization", "").removeprefix("Bearer ")
        if token:
            env["P2P_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "peer_app.client", "--maestro", self.maestro, *args],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )


def fake_search_answer(stranger: Stranger, attacker_grpc: str, rogue_url: str) -> dict:
    """A search answer that claims the victims' own files live at the attacker's server."""
    results = [
        {
            "file": f,
            "peer": peer,
            "rest_url": rogue_url,
            "grpc_address": attacker_grpc,
            "size": len(EVIL),
            "sha256": EVIL_SHA,
        }
        for peer in ("peer1", "peer2")
        for f in ORIGINAL[peer]
    ]
    return {"qid": "x" * 32, "duplicate": False, "results": results, "visited": ["rogue"], "messages": 0}


def start_network(stranger: Stranger, tmp: Path) -> Net:
    """The stranger's fake servers, then a Maestro and three peers on stranger.host_address."""
    addr = stranger.address
    rogue_url, broken_url = f"http://{addr}:{ROGUE_PORT}", f"http://{addr}:{BROKEN_PORT}"
    attacker_grpc = stranger.do("serve_grpc", host=addr, port=GRPC_PORT, data_hex=EVIL.hex())["address"]
    listener_url = stranger.do("serve_http", host=addr, port=LISTENER_PORT, default={"status": "ok"})["url"]
    lying = fake_search_answer(stranger, attacker_grpc, rogue_url)
    unverified = [{"url": listener_url + "/steal?x=1", "name": "x"}, {"url": listener_url, "name": "y"}]
    stranger.do(
        "serve_http",
        host=addr,
        port=ROGUE_PORT,
        routes={
            "/search": lying,
            "/membership": {"name": "rogue", "rest_url": rogue_url, "grpc_address": attacker_grpc},
            "/register": {"status": "registered", "name": "rogue", "peers": unverified},
        },
    )
    stranger.do(
        "serve_http",
        host=addr,
        port=BROKEN_PORT,
        routes={"/search": {"results": [], "visited": [], "messages": "x"}, "/locate": {"peers": "nonsense"}},
    )

    settings = Settings(heartbeat_interval=0.5, request_timeout=1.0)
    configs = node_configs(tmp, ["peer1", "peer2", "peer3"], settings, host=stranger.host_address)
    friends = {"peer1": ("peer2", Friend("rogue", rogue_url)), "peer3": ("peer1", Friend("broken", broken_url))}
    for name, (primary, backup) in friends.items():
        configs[name] = replace(
            configs[name], friends={"primary": Friend(primary, configs[primary].rest_url), "backup": backup}
        )
    secret_file = tmp / ".p2p-secret"
    configs = secure(configs, secret_file)
    for peer, files in ORIGINAL.items():
        for fname, data in files.items():
            (Path(configs[peer].shared_dir) / fname).write_bytes(data)
    nodes = write_nodes(tmp, configs)
    net = Net(nodes, stranger, tmp, secret_file, rogue_url, broken_url, listener_url, attacker_grpc)
    for node in nodes.values():
        node.start()
    for node in nodes.values():
        node.wait_healthy()
    wait_until(
        lambda: all(net.locate(f) for files in ORIGINAL.values() for f in files),
        timeout=20,
        what="every peer registered",
    )
    return net


def stop_network(net: Net) -> None:
    for node in reversed(list(net.nodes.values())):
        node.stop()


# --- the attacks: each returns whether it succeeded, and why we think so --------------------------


def _status(answer: dict) -> str:
    if "error" in answer:
        return f"{answer['error']}"
    body = answer["body"]
    error = body.get("error") if isinstance(body, dict) else None
    return f"{answer['status']}{' ' + error if error else ''}"


def upload_overwrite(net: Net) -> Outcome:
    s = net.stranger
    answer = s.do("upload", address=net.grpc("peer1"), name="archivo1.txt", data_hex=EVIL.hex(), overwrite=True)
    ok = answer["code"] == "OK"
    if ok:
        wait_until(
            lambda: any(p["sha256"] == EVIL_SHA for p in net.locate("archivo1.txt")),
            timeout=5,
            what="the Maestro to advertise the attacker's sha256",
        )
    return Outcome(
        "upload-overwrite",
        "overwrite anyone's files (Upload + overwrite)",
        ok,
        f"Upload: {answer['code']}" + ("; the Maestro now advertises the attacker's sha256" if ok else ""),
    )


def upload_new(net: Net) -> Outcome:
    answer = net.stranger.do("upload", address=net.grpc("peer2"), name="gift.txt", data_hex=EVIL.hex())
    return Outcome(
        "upload-new-file", "write files into a shared folder", answer["code"] == "OK", f"Upload: {answer['code']}"
    )


def dummy_upload(net: Net) -> Outcome:
    answer = net.stranger.do("dummy_upload", address=net.grpc("peer2"), size=1 << 20)
    return Outcome("dummy-upload", "use a peer's DummyUpload", answer["code"] == "OK", f"DummyUpload: {answer['code']}")


def _register_as(net: Net, name: str, file: str, headers: dict | None = None) -> dict:
    """POST /register at the Maestro from the stranger: name holds file, served by the attacker."""
    payload = {
        "name": name,
        "rest_url": net.rogue_url,
        "grpc_address": net.attacker_grpc,
        "heartbeat_interval": 3600,
        "files": [{"name": file, "size": len(EVIL), "mtime": 1, "sha256": EVIL_SHA}],
    }
    return net.stranger.http("POST", net.maestro + "/register", json=payload, headers=headers or {})


def maestro_hijack(net: Net) -> Outcome:
    answer = _register_as(net, "peer2", "archivo2.txt")
    hijacked = [p["grpc_address"] for p in net.locate("archivo2.txt")] == [net.attacker_grpc]
    return Outcome(
        "maestro-register-as-peer2",
        "poison the directory: register under peer2's name",
        hijacked,
        f"POST /register: {_status(answer)}"
        + ("; /locate archivo2.txt -> the attacker's gRPC server" if hijacked else ""),
    )


def maestro_impersonation(net: Net) -> Outcome:
    """peer3's own credential (a member, or one who stole it) used to register as peer2."""
    token = peer_token(net.secret_file, "peer3")
    answer = _register_as(net, "peer2", "archivo2.txt", {"Authorization": f"Bearer {token}"} if token else {})
    hijacked = [p["grpc_address"] for p in net.locate("archivo2.txt")] == [net.attacker_grpc]
    return Outcome(
        "register-as-peer2-with-peer3-token",
        "a peer registers under another peer's name",
        hijacked or answer.get("status") == 200,
        f"POST /register: {_status(answer)}",
    )


def maestro_ghosts(net: Net) -> Outcome:
    answer = _register_as(net, "ghost-1", "archivo3.txt")
    listed = any(p["name"] == "ghost-1" for p in net.locate("archivo3.txt"))
    return Outcome(
        "maestro-register-ghost",
        "poison the directory: new names, heartbeat_interval 3600",
        listed,
        f"POST /register: {_status(answer)}" + ("; ghost-1 listed as a holder" if listed else ""),
    )


def maestro_heartbeat(net: Net) -> Outcome:
    answer = net.stranger.http("POST", net.maestro + "/heartbeat", json={"name": "peer3"})
    return Outcome(
        "maestro-heartbeat-as-peer3",
        "keep a stopped peer alive with heartbeats",
        answer.get("status") == 200,
        f"POST /heartbeat: {_status(answer)}",
    )


def ssrf_register(net: Net) -> Outcome:
    target = net.listener_url + "/steal?x=1"
    answer = net.stranger.http("POST", net.url("peer2") + "/register", json={"url": target})
    kept = target in net.known_urls("peer2")
    before = len(net.stranger.do("hits", port=LISTENER_PORT)["hits"])
    requests.get(net.url("peer2") + "/search", params={"query": "zzz", "fanout": "8"}, headers=net.op(), timeout=10)
    sent = len(net.stranger.do("hits", port=LISTENER_PORT)["hits"]) - before
    return Outcome(
        "ssrf-register-path-query",
        "SSRF: peer /register stores a URL with path and query",
        kept,
        f"POST /register: {_status(answer)}; kept: {kept}; one search sent {sent} request(s) to it",
    )


def ssrf_non_peer(net: Net) -> Outcome:
    answer = net.stranger.http("POST", net.url("peer2") + "/register", json={"url": net.listener_url})
    kept = net.listener_url in net.known_urls("peer2")
    return Outcome(
        "register-non-peer",
        "learned peers are not checked to be p2pnet peers",
        kept,
        f"POST /register: {_status(answer)}; kept: {kept}",
    )


def bootstrap_by_stranger(net: Net) -> Outcome:
    answer = net.stranger.http("POST", net.url("peer3") + "/bootstrap")
    return Outcome(
        "bootstrap-by-stranger",
        "anyone triggers /bootstrap",
        answer.get("status") == 200,
        f"POST /bootstrap: {_status(answer)}",
    )


def bootstrap_spreads(net: Net) -> Outcome:
    # peer1's backup friend (the rogue) answered peer1's start-up bootstrap with unverified URLs.
    requests.post(net.url("peer1") + "/bootstrap", headers=net.op(), timeout=10)
    spread = [u for u in net.known_urls("peer1") if u.startswith(net.listener_url)]
    return Outcome(
        "bootstrap-spreads-unverified",
        "/bootstrap spreads unverified entries",
        bool(spread),
        f"peer1 learned {len(spread)} unverified URL(s) from a friend's answer",
    )


def lying_friend(net: Net) -> Outcome:
    resp = requests.get(
        net.url("peer1") + "/search", params={"query": "archivo", "fanout": "2"}, headers=net.op(), timeout=10
    )
    own = [r for r in resp.json().get("results", []) if r.get("peer") == "peer1"] if resp.ok else []
    replaced = any(r.get("grpc_address") == net.attacker_grpc for r in own)
    return Outcome(
        "lying-answer-friend",
        "a lying search answer replaces the searcher's own results",
        replaced,
        f"GET /search: {resp.status_code}; peer1's own archivo1.txt now points at "
        f"{own[0].get('grpc_address') if own else 'nothing'}",
    )


def lying_registered(net: Net) -> Outcome:
    answer = net.stranger.http("POST", net.url("peer2") + "/register", json={"url": net.rogue_url})
    resp = requests.get(
        net.url("peer2") + "/search", params={"query": "archivo2", "fanout": "8"}, headers=net.op(), timeout=10
    )
    own = [r for r in resp.json().get("results", []) if r.get("peer") == "peer2"] if resp.ok else []
    replaced = any(r.get("grpc_address") == net.attacker_grpc for r in own)
    return Outcome(
        "lying-answer-registered",
        "a fake peer registered by a stranger lies in search answers",
        replaced,
        f"POST /register: {_status(answer)}; GET /search: {resp.status_code}; replaced: {replaced}",
    )


def malformed_answer(net: Net) -> Outcome:
    resp = requests.get(net.url("peer3") + "/search", params={"query": "archivo"}, headers=net.op(), timeout=10)
    return Outcome(
        "malformed-answer",
        'an answer with "messages": "x" turns searches into a 500',
        resp.status_code >= 500,
        f"GET /search at peer3: {resp.status_code}",
    )


def eclipse(net: Net) -> Outcome:
    answers = [
        net.stranger.http("POST", net.url("peer2") + "/register", json={"url": net.url(f), "name": "peer2"})
        for f in ("peer3", "peer1")
    ]
    resp = requests.get(net.url("peer2") + "/locate", params={"file": "archivo1.txt"}, headers=net.op(), timeout=10)
    return Outcome(
        "eclipse-rename-friends",
        "rename peer2's friends so its /locate answers 404",
        resp.status_code == 404,
        f"POST /register x2: {', '.join(_status(a) for a in answers)}; "
        f"GET /locate archivo1.txt at peer2: {resp.status_code}",
    )


ATTACKS: list[Callable[[Net], Outcome]] = [
    upload_overwrite,
    upload_new,
    dummy_upload,
    maestro_hijack,
    maestro_impersonation,
    maestro_ghosts,
    maestro_heartbeat,
    ssrf_register,
    ssrf_non_peer,
    bootstrap_by_stranger,
    bootstrap_spreads,
    lying_friend,
    lying_registered,
    malformed_answer,
    eclipse,
]


# --- what must keep working, over the same non-loopback address ----------------------------------


def _last_line(run: subprocess.CompletedProcess) -> str:
    lines = (run.stdout or run.stderr).strip().splitlines()
    return lines[-1][:160] if lines else f"exit {run.returncode}"


def operator_works(net: Net) -> list[Check]:
    checks = []
    work = net.tmp / "operator"
    work.mkdir(exist_ok=True)
    mine = work / "mine.txt"
    mine.write_bytes(os.urandom(200_000))
    up = net.client("upload", str(mine), "--to", net.url("peer3"), "--name", "operator.txt")
    checks.append(Check("operator upload", up.returncode == 0, _last_line(up)))
    down = net.client("download", "archivo2.txt", "--out", str(work / "archivo2.txt"))
    got = (work / "archivo2.txt").read_bytes() if down.returncode == 0 else b""
    checks.append(
        Check("operator download", got == ORIGINAL["peer2"]["archivo2.txt"], (down.stdout or down.stderr).strip()[:100])
    )
    resp = requests.post(net.url("peer1") + "/refresh", headers=net.op(), timeout=10)
    checks.append(Check("operator refresh", resp.status_code == 200, f"POST /refresh: {resp.status_code}"))
    return checks


def network_unharmed(net: Net) -> list[Check]:
    peers = requests.get(net.maestro + "/peers", headers=net.op(), timeout=5).json()["peers"]
    names = sorted(p["name"] for p in peers if p["alive"])
    first = {p["name"]: p["last_seen"] for p in peers}

    def beat_again():
        now = {
            p["name"]: p["last_seen"]
            for p in requests.get(net.maestro + "/peers", headers=net.op(), timeout=5).json()["peers"]
        }
        return all(now[n] > first[n] for n in ("peer1", "peer2", "peer3"))

    try:
        wait_until(beat_again, timeout=5, what="a heartbeat from every peer")
        beating = True
    except AssertionError:
        beating = False
    holders = {f: [p["grpc_address"] for p in net.locate(f)] for files in ORIGINAL.values() for f in files}
    truthful = all(
        addrs == [net.grpc(peer)] for peer, files in ORIGINAL.items() for f in files for addrs in [holders[f]]
    )
    sha1 = [p["sha256"] for p in net.locate("archivo1.txt")]

    def dropped(node: str, reason: str) -> float:
        text = requests.get(net.url(node) + "/metrics", headers=net.op(), timeout=5).text
        return metric_value(text, "p2p_remote_answers_dropped_total", reason=reason)

    counted = {
        "peer1 impersonation": dropped("peer1", "impersonation"),
        "peer3 malformed": dropped("peer3", "malformed"),
    }
    return [
        Check("peers registered (non-loopback)", names == ["peer1", "peer2", "peer3"], f"alive: {names}"),
        Check("peers' heartbeats (non-loopback)", beating, "every peer beat again within 5 s"),
        Check(
            "directory tells the truth",
            truthful and sha1 == [hashlib.sha256(b"uno\n").hexdigest()],
            f"holders: {holders}",
        ),
        Check("bad answers counted in /metrics", all(counted.values()), f"dropped: {counted}"),
    ]


def run_all(stranger: Stranger, tmp: Path) -> Report:
    report = Report()
    net = start_network(stranger, tmp)
    try:
        report.checks += operator_works(net)
        for attack in ATTACKS:
            report.attacks.append(attack(net))
        report.checks += network_unharmed(net)
    finally:
        stop_network(net)
    return report


def main() -> int:
    reason = Stranger.available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with Stranger() as stranger, tempfile.TemporaryDirectory(prefix="p2p8-attacks-") as tmp:
        report = run_all(stranger, Path(tmp))
    report.show(time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
