"""Members using their credentials against others, end to end (tests/e2e/member_attacks.py).

Real processes: a Maestro and three peers on the root end of a veth, the network's folder as the
operator keeps it, a stranger's namespace holding members' credentials (never the secret), and
the operator's CLI run from the network's folder. Every attack must be refused, while the
operator, the peers and a member acting on its own node keep working. Root only: skipped with
the reason otherwise.
"""

from __future__ import annotations

import pytest

from tests.e2e import member_attacks
from tests.e2e.stranger import Stranger, leftovers

pytestmark = pytest.mark.skipif(Stranger.available() is not None, reason=f"member attacks: {Stranger.available()}")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Stranger(member_attacks.PREFIX, member_attacks.SUBNET) as stranger:
        network = member_attacks.start_network(stranger, tmp_path_factory.mktemp("member-attacks"))
        try:
            yield network
        finally:
            member_attacks.stop_network(network)
    assert stranger.namespace not in leftovers(member_attacks.PREFIX)


@pytest.mark.parametrize("attack", member_attacks.ATTACKS, ids=[a.__name__ for a in member_attacks.ATTACKS])
def test_the_attack_is_refused(net, attack):
    outcome = attack(net)
    assert not outcome.succeeded, f"{outcome.attack} ({outcome.finding}): {outcome.evidence}"


def test_the_network_still_works_for_the_operator_the_peers_and_a_member_on_its_own_node(net):
    for check in member_attacks.network_works(net):
        assert check.ok, f"{check.what}: {check.evidence}"
