"""Members only, end to end: a stranger on another address tries every finding of docs/security.md.

Real processes: a Maestro and three peers listen on the root end of a veth; the stranger acts
from a network namespace (tests/e2e/stranger.py), so neither it nor the network's own traffic
comes from loopback. Each attack must be refused cleanly, while the operator (with the token
from the topology's secret) and the peers themselves keep working over the same addresses.
Root only: skipped with the reason otherwise.
"""

from __future__ import annotations

import sys

import pytest

from tests.e2e import attacks
from tests.e2e.stranger import Stranger, leftovers

pytestmark = pytest.mark.skipif(Stranger.available() is not None, reason=f"attack suite: {Stranger.available()}")


@pytest.fixture(scope="module")
def stranger():
    with Stranger() as s:
        yield s
    assert s.namespace not in leftovers()


@pytest.fixture(scope="module")
def net(stranger, tmp_path_factory):
    network = attacks.start_network(stranger, tmp_path_factory.mktemp("attacks"))
    yield network
    attacks.stop_network(network)


def test_the_operator_uploads_downloads_and_refreshes_over_a_non_loopback_address(net):
    for check in attacks.operator_works(net):
        assert check.ok, f"{check.what}: {check.evidence}"


@pytest.mark.parametrize("attack", attacks.ATTACKS, ids=[a.__name__ for a in attacks.ATTACKS])
def test_the_stranger_is_refused(net, attack):
    outcome = attack(net)
    assert not outcome.succeeded, f"{outcome.attack} ({outcome.finding}): {outcome.evidence}"


def test_the_stranger_sees_one_line_and_exit_7_from_the_cli(net, tmp_path):
    sample = tmp_path / "gift.txt"
    sample.write_text("gift\n")
    run = net.stranger.run(
        sys.executable,
        "-m",
        "peer_app.client",
        "--maestro",
        net.maestro,
        "upload",
        str(sample),
        "--to",
        net.url("peer1"),
        cwd=tmp_path,
        env={"P2P_TOKEN": ""},
    )
    assert run.returncode == 7, run.stderr
    assert run.stderr.strip() == (
        "error: peer1 refused the upload: not a member of this network; pass --token or run from the network's folder"
    )


def test_the_network_is_unharmed_and_its_peers_keep_beating(net):
    for check in attacks.network_unharmed(net):
        assert check.ok, f"{check.what}: {check.evidence}"
