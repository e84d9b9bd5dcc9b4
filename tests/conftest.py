"""Fixtures for every test: node configs (one factory) and the in-process apps built from them.

Tests under tests/e2e/ start real processes; their fixtures live in tests/e2e/conftest.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common.config import Friend, NodeConfig, Security, Settings
from tests.support import Clock, free_port


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand (tests/support.Clock)."""
    return Clock()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Unmount the small disks a killed run left mounted (tests.support.SmallDisk), before any temp folder is reused."""
    from tests.support import sweep_small_disks

    for point in sweep_small_disks():
        print(f"unmounted {point}, left by a test run that did not end")


@pytest.fixture
def make_config(tmp_path: Path):
    """The one way to build a node's config: make_config("peer" | "maestro", **fields to override).

    A peer shares tmp_path/shared; its Maestro and friends listen nowhere (their ports were
    free a moment ago) unless overridden. Loopback callers are the operator whatever their
    account (`local_operator: any`): a Flask test client has no connection the kernel could
    name an account for; the owner rule is tested with real connections (test_local_owner.py,
    tests/e2e/test_browsers.py).
    """
    security = Security(local_operator="any")

    def make(role: str = "peer", **fields) -> NodeConfig:
        run_dir = str(tmp_path / "run")
        if role == "maestro":
            return NodeConfig(**{"role": role, "name": "maestro", "host": "127.0.0.1", "rest_port": 1,
                                 "run_dir": run_dir, "security": security, **fields})  # fmt: skip
        shared = tmp_path / "shared"
        shared.mkdir(exist_ok=True)
        defaults = {
            "role": role,
            "name": "peer1",
            "host": "127.0.0.1",
            "rest_port": free_port(),
            "grpc_port": free_port(),
            "shared_dir": str(shared),
            "run_dir": run_dir,
            "maestro_url": f"http://127.0.0.1:{free_port()}",
            "friends": {
                "primary": Friend("peer2", f"http://127.0.0.1:{free_port()}"),
                "backup": Friend("peer3", f"http://127.0.0.1:{free_port()}"),
            },
            "settings": Settings(request_timeout=0.5),
            "security": security,
        }
        return NodeConfig(**{**defaults, **fields})

    return make


@pytest.fixture
def small_disk(tmp_path: Path):
    """A mounted tmpfs of 8 MiB to fill (tests.support.SmallDisk); skipped where it cannot be mounted."""
    from tests.support import small_disk

    yield from small_disk(tmp_path / "disk")


@pytest.fixture
def maestro_config(make_config) -> NodeConfig:
    return make_config("maestro")


@pytest.fixture
def maestro(maestro_config):
    """The Maestro's REST app in-process (a Flask test client)."""
    from maestro_app import create_app

    return create_app(maestro_config).test_client()


@pytest.fixture
def peer_config(make_config) -> NodeConfig:
    """peer1 sharing archivo1.txt and notes.md."""
    config = make_config("peer")
    shared = Path(config.shared_dir)
    (shared / "archivo1.txt").write_text("hola\n")
    (shared / "notes.md").write_text("# notes\n")
    return config


@pytest.fixture
def peer(peer_config):
    """A peer's REST app in-process (a Flask test client)."""
    from peer_app import create_app

    return create_app(peer_config).test_client()


@pytest.fixture
def dl(tmp_path):
    """An empty folder to download into."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def serve(peer_config):
    """Start in-process gRPC servers on port 0: start(config=None, interceptors=(), on_upload=None, **settings).

    start() returns (address, shared folder).

    The server runs peer_config (or config) with the given settings replaced, and the given
    interceptors inside the server's own (after admission, before OneRequest).
    """
    from peer_app.grpc_server import create_server

    servers = []

    def start(config=None, interceptors=(), on_upload=None, **settings):
        config = config or peer_config
        config = replace(config, settings=replace(config.settings, **settings))
        server, port, servicer = create_server(config, "127.0.0.1:0", interceptors=interceptors, on_upload=on_upload)
        server.start()
        servers.append((server, servicer))
        return f"127.0.0.1:{port}", Path(config.shared_dir)

    yield start
    for server, servicer in servers:
        servicer.close()  # the fast lane's listener, if a download opened it
        server.stop(None)


@pytest.fixture
def peer_server(peer_config, tmp_path):
    """peer_server(name="peer1", files={name: bytes}, **settings): an in-process gRPC peer with a folder of its own.

    Returns (address, shared folder, servicer); every server started is stopped after the test.
    """
    from peer_app.grpc_server import create_server

    started: list = []

    def start(name: str = "peer1", files: dict[str, bytes] | None = None, **settings):
        shared = tmp_path / f"shared-{name}-{len(started)}"
        shared.mkdir()
        for file, data in (files or {}).items():
            (shared / file).write_bytes(data)
        config = replace(
            peer_config,
            name=name,
            shared_dir=str(shared),
            run_dir=str(tmp_path / f"run-{name}-{len(started)}"),
            settings=replace(peer_config.settings, **settings),
        )
        server, port, servicer = create_server(config, "127.0.0.1:0")
        server.start()
        started.append((server, servicer))
        return f"127.0.0.1:{port}", shared, servicer

    yield start
    for server, servicer in started:
        servicer.close()
        server.stop(None)


@pytest.fixture
def stub_for():
    """stub_for(address): a FileTransfer stub; own_connection=True: on a TCP connection of its own.

    gRPC shares one connection between the channels of a process that have the same target
    and options; a test that plays several clients needs own_connection.
    """
    import grpc

    from common import transfer_pb2_grpc
    from common.rpc import CHANNEL_OPTIONS

    channels = []

    def make(address, *, own_connection: bool = False):
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)] if own_connection else CHANNEL_OPTIONS
        channel = grpc.insecure_channel(address, options=options)
        channels.append(channel)
        return transfer_pb2_grpc.FileTransferStub(channel)

    yield make
    for channel in channels:
        channel.close()
