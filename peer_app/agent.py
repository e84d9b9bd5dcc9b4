"""One peer's presence: registration at the Maestro, heartbeats, bootstrap at friends.

Runs in the peer's gRPC process (one sender per peer, not one per gunicorn worker);
the REST app reuses register_at_maestro and bootstrap for /refresh and /bootstrap.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from client.api import Maestro, Peer, rest_transport
from common.config import NodeConfig
from common.credentials import Credentials
from common.errors import NotFound, P2PError
from common.security import Guard
from peer_app.index import SharedIndex
from peer_app.membership import Verifier
from peer_app.state import KnownPeers

log = logging.getLogger(__name__)


def self_description(config: NodeConfig) -> dict:
    """How this peer introduces itself to others."""
    return {"url": config.rest_url, "name": config.name, "grpc_address": config.grpc_address}


def register_at_maestro(config: NodeConfig, index: SharedIndex, credentials: Credentials) -> dict:
    """Scan the shared folder and send the whole list to the Maestro."""
    files = [f.to_json() for f in index.scan()]
    payload = {
        "name": config.name,
        "rest_url": config.rest_url,
        "grpc_address": config.grpc_address,
        "heartbeat_interval": config.settings.heartbeat_interval,
        "files": files,
        "friends": {role: friend.name for role, friend in config.friends.items()},
    }
    return Maestro(config.maestro_url, config.settings.request_timeout, credentials, node=True).register(payload)


def bootstrap(
    config: NodeConfig,
    known: KnownPeers,
    credentials: Credentials,
    verifier: Verifier,
    only: set[str] | None = None,
) -> list[dict]:
    """Introduce ourselves to both friends (or those in only); learn the peers they list that prove to be members."""
    outcome = []
    for friend in known.friends():
        if only is not None and friend["url"] not in only:
            continue
        try:
            answer = Peer(friend["url"], config.settings.request_timeout, credentials, node=True).register(
                self_description(config)
            )
        except P2PError as err:  # no down mark: at start-up a friend is often just not up yet
            known.failed(friend["url"])
            outcome.append({"url": friend["url"], "ok": False, "detail": err.detail})
            continue
        known.succeeded(friend["url"])
        peers = answer.get("peers")
        listed = peers if isinstance(peers, list) else []
        learned = verifier.learn_listed(known, listed, limit=config.settings.max_learned_peers, me=config.rest_url)
        outcome.append({"url": friend["url"], "ok": True, "name": friend["name"], "learned": len(learned)})
    return outcome


class Backoff:
    """Waits that double from first up to cap; reset() after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = max(cap, first)
        self._next = first

    def next(self) -> float:
        wait, self._next = self._next, min(self._next * 2, self.cap)
        return wait

    def reset(self) -> None:
        self._next = self.first


class PresenceAgent:
    """Registers the peer, then beats; re-registers when the folder or the Maestro changed.

    A Maestro that cannot be reached (not up yet, on a host that is cut off) is retried with
    doubling waits up to retry_backoff_max; friends are introduced to on their own thread,
    again and again with backoff until each has answered once, so friends that come up later
    learn this peer without a restart and a cut-off friend never delays a heartbeat.
    """

    def __init__(self, config: NodeConfig, index: SharedIndex, known: KnownPeers) -> None:
        self.config = config
        self.index = index
        self.known = known
        s = config.settings
        guard = Guard.of(config.security, config.name)
        self.credentials = Credentials.of_node(config, guard)  # registration, heartbeats, introductions to friends
        # verifying a listed URL asks an address a member chose and nobody has proven: no credential
        anonymous = self.credentials.without_token()
        self.verifier = Verifier(guard, rest_transport(anonymous), timeout=s.request_timeout, tls=config.security.tls)
        # A beat never takes longer than the interval, so a beat lost to a cut-off network is
        # retried on time and the peer is alive again within one beat of the network healing.
        self.maestro = Maestro(
            config.maestro_url, min(s.request_timeout, s.heartbeat_interval), self.credentials, node=True
        )
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._missed = 0  # heartbeats lost in a row
        self.registered = False

    def register_now(self) -> bool:
        """Register at once (after an upload, say); False if the Maestro is unreachable."""
        with self._lock:
            signature = self.index.signature()
            try:
                answer = register_at_maestro(self.config, self.index, self.credentials)
            except P2PError as err:
                log.warning("registration at %s failed: %s", self.config.maestro_url, err.detail)
                self.registered = False
                return False
            log.info("registered at %s with %s file(s)", self.config.maestro_url, answer.get("files", "?"))
            self._signature = signature
            self.registered = True
            return True

    def beat(self) -> None:
        """One heartbeat, or a full registration if anything changed."""
        if not self.registered or self.index.signature() != self._signature:
            self.register_now()
            return
        try:
            self.maestro.heartbeat(self.config.name)
        except NotFound:  # the Maestro forgot us (a new directory): introduce ourselves again
            self.register_now()
        except P2PError as err:
            # one line when beats start failing and one when they get through again, not one per beat
            if not self._missed:
                log.warning("heartbeat to %s failed: %s (retrying every beat)", self.config.maestro_url, err.detail)
            self._missed += 1
            return
        if self._missed:
            log.info("heartbeat to %s got through again after %d missed", self.config.maestro_url, self._missed)
            self._missed = 0

    def _interval(self) -> float:
        s = self.config.settings
        return s.heartbeat_interval * (1 + random.uniform(0, s.heartbeat_jitter))

    def _backoff(self) -> Backoff:
        s = self.config.settings
        return Backoff(min(1.0, s.heartbeat_interval), s.retry_backoff_max)

    def run(self) -> None:
        """Register, then beat until stop is set; retry an unreachable Maestro with backoff."""
        retry = self._backoff()
        failing = False
        while not self.stop.is_set():
            started = time.monotonic()
            self.beat()
            if self.registered:
                if failing:
                    log.info("registered at %s", self.config.maestro_url)
                failing = False
                retry.reset()
                self.stop.wait(max(0.0, self._interval() - (time.monotonic() - started)))
            else:
                failing = True
                self.stop.wait(retry.next())

    def introduce(self) -> None:
        """Introduce this peer to its friends until each has answered once (backoff between rounds)."""
        pending = {f["url"] for f in self.known.friends()}
        retry = self._backoff()
        while pending and not self.stop.is_set():
            # a friend verifies us through our REST side, which may still be starting: retried too
            for result in bootstrap(self.config, self.known, self.credentials, self.verifier, only=pending):
                if result["ok"]:
                    pending.discard(result["url"])
            if pending:
                self.stop.wait(retry.next())

    def start(self) -> threading.Thread:
        threading.Thread(target=self.introduce, name="introductions", daemon=True).start()
        thread = threading.Thread(target=self.run, name="presence", daemon=True)
        thread.start()
        return thread
