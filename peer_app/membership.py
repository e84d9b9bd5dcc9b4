"""A peer learns other peers only after they prove to be peers (docs/security.md, "Peers only talk to verified peers").

A URL offered by `POST /register` or listed in a friend's bootstrap answer is asked
`GET /membership?challenge=C`, presenting no credential: until it has proved to be a member, the
address is anyone's, and under `read: members` even the read credential would open this network's
reads to it. The endpoint is open on every peer and tells only who the peer is. The URL is kept
only when the answer names that very URL and, when this network has a secret, carries the proof
HMAC(secret; name, url, C): only a member can compute it, and it cannot be relayed to pass as
another address. The name stored is the one the peer proved, never one a caller typed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent import futures

from common.errors import BadRequest, Busy, Forbidden, InsufficientStorage, P2PError
from common.fields import grpc_address_problem
from common.names import peer_name_problem
from common.security import Guard, new_challenge
from common.urls import check_peer_url
from peer_app.state import KnownPeers

Transport = Callable[[str, str, dict, float], dict]
MAX_PER_BOOTSTRAP = 16  # candidates verified from one friend's answer
MAX_CHALLENGE = 128  # characters of a challenge a peer answers


def proof_fields(guard: Guard, name: str, url: str, challenge: str | None) -> dict:
    """What /info adds when asked with a challenge: this peer's proof of membership."""
    if not challenge or len(challenge) > MAX_CHALLENGE:
        return {}
    proof = guard.proof(name, url, challenge)
    return {} if proof is None else {"challenge": challenge, "proof": proof}


class Verifier:
    """Checks that a URL is a p2pnet peer of this network, and learns it."""

    def __init__(self, guard: Guard, transport: Transport, *, timeout: float, tls: bool = False) -> None:
        self.guard = guard
        self.transport = transport
        self.timeout = timeout
        self.tls = tls

    def verify(self, url: str) -> dict:
        """{"url", "name", "grpc_address"} of the peer at url; BadRequest if it is not one of ours."""
        challenge = new_challenge()
        try:
            answer = self.transport(url, "/membership", {"challenge": challenge}, self.timeout)
        except P2PError as err:
            raise BadRequest(f"{url} did not answer as a p2pnet peer: {err.detail}") from None
        if not isinstance(answer, dict):
            raise BadRequest(f"{url} did not answer as a p2pnet peer")
        name, grpc_address, rest_url = answer.get("name"), answer.get("grpc_address"), answer.get("rest_url")
        if not isinstance(name, str) or peer_name_problem(name) is not None or grpc_address_problem(grpc_address):
            raise BadRequest(f"{url} did not answer as a p2pnet peer (no name and gRPC address)")
        if rest_url != url:
            raise BadRequest(f"{url} answers as {name!r} at {str(rest_url)[:80]!r}; register that URL instead")
        if self.guard.secret is not None and not self.guard.proves(name, url, challenge, answer.get("proof")):
            raise BadRequest(f"{url} answers as {name!r} but is not a member of this network")
        return {"url": url, "name": name, "grpc_address": grpc_address}

    def learn(
        self, known: KnownPeers, url: str, *, limit: int, claimed_name: object = None, only: str | None = None
    ) -> dict:
        """Verify url and remember it as a learned peer; friends are never renamed or replaced.

        only: the name url must prove to be (a peer's credential introduces that peer only), else Forbidden.
        """
        existing = known.get(url)
        if existing is not None and existing["role"] != "learned":
            if only is not None and existing["name"] != only:
                raise Forbidden(f"{only} may introduce only itself; {url} is {existing['name']}")
            return {"url": url, "name": existing["name"], "role": existing["role"]}
        peer = self.verify(url)
        if only is not None and peer["name"] != only:
            raise Forbidden(f"{only} may introduce only itself; {url} proved to be {peer['name']!r}")
        if claimed_name is not None and claimed_name != peer["name"]:
            raise BadRequest(f"{url} proved to be {peer['name']!r}, not {claimed_name!r}")
        for friend in known.friends():
            if friend["name"] == peer["name"]:
                raise BadRequest(
                    f"{peer['name']!r} is this peer's {friend['role']} friend at {friend['url']};"
                    " friends change only in the topology"
                )
        known.learn(url, peer["name"], peer["grpc_address"], limit=limit)
        return {**peer, "role": "learned"}

    def learn_listed(self, known: KnownPeers, entries: Iterable[object], *, limit: int, me: str) -> list[str]:
        """Verify and learn the peers a friend listed (at most MAX_PER_BOOTSTRAP new ones); return their URLs."""
        candidates = []
        for entry in entries:
            url = entry.get("url") if isinstance(entry, dict) else None
            try:
                url = check_peer_url(url, tls=self.tls)
            except BadRequest:
                continue
            if url != me and known.get(url) is None and url not in candidates:
                candidates.append(url)
        candidates = candidates[:MAX_PER_BOOTSTRAP]
        learned = []
        with futures.ThreadPoolExecutor(max_workers=min(8, len(candidates) or 1)) as pool:
            for url, job in [(u, pool.submit(self.verify, u)) for u in candidates]:
                try:
                    peer = job.result()
                    if not any(f["name"] == peer["name"] for f in known.friends()):
                        known.learn(url, peer["name"], peer["grpc_address"], limit=limit)
                        learned.append(url)
                except (BadRequest, Busy, InsufficientStorage):  # a full disk: learned another time
                    continue
        return learned
