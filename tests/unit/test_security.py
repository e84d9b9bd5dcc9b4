"""Members only: the secret file, credentials bound to names, trusted networks (common/security.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from common.errors import Forbidden, Unauthorized
from common.security import (
    MUTATING,
    OPEN,
    OPERATOR,
    READ,
    Caller,
    Guard,
    SecretError,
    ensure_secret,
    loose_permissions,
    new_challenge,
    operator_token,
    peer_token,
    read_secret,
    secret_path,
)

SECRET = b"0123456789abcdef0123456789abcdef-network-one"
OTHER = b"0123456789abcdef0123456789abcdef-network-two"


def test_the_secret_file_is_created_once_private_and_random(tmp_path):
    path = tmp_path / "net" / ".p2p-secret"
    assert ensure_secret(path) is True
    first = read_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) == 64
    assert ensure_secret(path) is False  # never replaced: every host copies this one file
    assert read_secret(path) == first
    ensure_secret(tmp_path / "other")
    assert read_secret(tmp_path / "other") != first


def test_a_missing_short_or_shared_secret_is_named(tmp_path):
    with pytest.raises(SecretError, match="no such secret file"):
        read_secret(tmp_path / "none")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(SecretError, match="at least 32"):
        read_secret(tmp_path / "short")
    shared = tmp_path / "shared"
    shared.write_text("x" * 40)
    shared.chmod(0o644)
    assert "chmod 600" in (loose_permissions(shared) or "")
    shared.chmod(0o600)
    assert loose_permissions(shared) is None


def test_secret_path_is_relative_to_the_topology_folder(tmp_path):
    assert secret_path(tmp_path) == tmp_path / ".p2p-secret"
    assert secret_path(tmp_path, "keys/net.secret") == tmp_path / "keys" / "net.secret"
    assert secret_path(tmp_path, "/etc/p2p/secret") == Path("/etc/p2p/secret")


def test_credentials_are_bound_to_names_and_to_the_network():
    guard = Guard(SECRET, trusted_networks=[])
    assert guard.identify(peer_token(SECRET, "peer2")) == "peer2"
    assert guard.identify(operator_token(SECRET)) == OPERATOR
    forged = "peer3." + peer_token(SECRET, "peer2").split(".", 1)[1]  # peer2's MAC under peer3's name
    assert guard.identify(forged) is None
    assert guard.identify(peer_token(OTHER, "peer2")) is None  # another network's secret
    assert guard.identify("peer2") is None
    assert guard.identify("") is None
    assert guard.identify("x" * 10_000) is None


def owned_by(uid):
    """The owner callable of a connection made by account uid (what the kernel would answer)."""
    return lambda: uid


OWNER = owned_by(1000)


def checked(guard: Guard, *args: Any) -> Caller:
    """guard.check(*args), which lets the call through: the caller it names."""
    caller = guard.check(*args)
    assert caller is not None
    return caller  # the account that owns the secret file in these tests


def test_strangers_need_a_valid_credential_for_mutating_calls():
    guard = Guard(SECRET, trusted_networks=["127.0.0.0/8", "::1/128"], operator_uids={1000})
    assert checked(guard, MUTATING, "127.0.0.1", None, OWNER).is_operator
    assert checked(guard, MUTATING, "::1", None, OWNER).is_operator
    assert checked(guard, MUTATING, "::ffff:127.0.0.1", None, OWNER).is_operator  # IPv4-mapped loopback
    with pytest.raises(Unauthorized, match="not a member"):
        guard.check(MUTATING, "10.208.0.2", None)
    with pytest.raises(Unauthorized, match="not valid"):
        guard.check(MUTATING, "10.208.0.2", "Bearer " + peer_token(OTHER, "peer2"))
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "10.208.0.2", "Basic " + peer_token(SECRET, "peer2"))
    caller = checked(guard, MUTATING, "10.208.0.2", "Bearer " + peer_token(SECRET, "peer2"))
    assert caller.name == "peer2" and not caller.is_operator
    assert checked(guard, MUTATING, "10.208.0.2", "bearer " + operator_token(SECRET)).is_operator


def test_a_trusted_address_is_the_operator_even_with_a_stale_credential():
    guard = Guard(SECRET, operator_uids={1000})
    assert checked(guard, MUTATING, "127.0.0.1", "Bearer " + peer_token(OTHER, "peer2"), OWNER).is_operator


def test_reads_are_open_unless_the_network_says_members():
    open_guard, members = Guard(SECRET, trusted_networks=[]), Guard(SECRET, trusted_networks=[], read="members")
    assert open_guard.check(READ, "10.208.0.2", None) is None
    with pytest.raises(Unauthorized):
        members.check(READ, "10.208.0.2", None)
    assert checked(members, READ, "10.208.0.2", "Bearer " + peer_token(SECRET, "peer1")).name == "peer1"
    assert members.check(OPEN, "10.208.0.2", None) is None  # health probes stay open


def test_a_peer_acts_only_as_itself_and_the_operator_as_anyone():
    guard = Guard(SECRET, trusted_networks=[])
    peer3 = guard.caller("10.208.0.2", "Bearer " + peer_token(SECRET, "peer3"))
    peer3.require_self("peer3")
    with pytest.raises(Forbidden, match="only as itself"):
        peer3.require_self("peer2")
    guard.caller("10.208.0.2", "Bearer " + operator_token(SECRET)).require_self("peer2")


def test_without_a_secret_only_trusted_addresses_may_change_anything():
    guard = Guard(None, operator_uids={1000})
    assert checked(guard, MUTATING, "127.0.0.1", None, OWNER).is_operator
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "10.0.0.1", "Bearer " + operator_token(SECRET))


def test_membership_proofs_answer_one_challenge_for_one_name():
    guard, challenge, url = Guard(SECRET), new_challenge(), "http://10.0.0.2:9003"
    proof = guard.proof("peer2", url, challenge)
    assert guard.proves("peer2", url, challenge, proof)
    assert not guard.proves("peer3", url, challenge, proof)
    assert not guard.proves("peer2", "http://10.0.0.66:9003", challenge, proof)  # relayed by another address
    assert not guard.proves("peer2", url, new_challenge(), proof)
    assert not Guard(OTHER).proves("peer2", url, challenge, proof)
    assert not guard.proves("peer2", url, challenge, None)
    assert not Guard(None).proves("peer2", url, challenge, proof)


def refused_owner():
    raise AssertionError("the guard asked who made the connection when it did not need to")


def test_on_loopback_only_the_secret_files_owner_is_the_operator_by_default():
    guard = Guard(SECRET, operator_uids={1000, 0})
    assert checked(guard, MUTATING, "127.0.0.1", None, owned_by(1000)).is_operator
    assert checked(guard, MUTATING, "::1", None, owned_by(0)).is_operator  # root reads the secret anyway
    for other in (owned_by(1001), owned_by(None), None):  # another account, an unknown one, no way to ask
        with pytest.raises(Unauthorized, match="needs a credential"):
            guard.check(MUTATING, "127.0.0.1", None, other)
    assert (
        checked(guard, MUTATING, "127.0.0.1", "Bearer " + peer_token(SECRET, "peer2"), owned_by(1001)).name == "peer2"
    )
    assert checked(guard, MUTATING, "127.0.0.1", "Bearer " + operator_token(SECRET), refused_owner).is_operator


def test_local_operator_any_trusts_every_local_account_and_none_trusts_none():
    anyone = Guard(SECRET, local_operator="any", operator_uids={1000})
    assert checked(anyone, MUTATING, "127.0.0.1", None, refused_owner).is_operator
    nobody = Guard(SECRET, local_operator="none", operator_uids={1000})
    with pytest.raises(Unauthorized):
        nobody.check(MUTATING, "127.0.0.1", None, owned_by(1000))
    assert checked(nobody, MUTATING, "127.0.0.1", "Bearer " + operator_token(SECRET)).is_operator
    with pytest.raises(ValueError, match="local_operator"):
        Guard(SECRET, local_operator="root")


def test_a_trusted_network_is_the_operator_from_other_machines_and_by_account_from_this_one():
    mine = {"10.208.0.1"}
    guard = Guard(SECRET, trusted_networks=["10.208.0.0/16"], operator_uids={1000}, own_address=mine.__contains__)
    assert checked(guard, MUTATING, "10.208.0.2", None, refused_owner).is_operator  # another machine: by address
    assert checked(guard, MUTATING, "10.208.0.1", None, owned_by(1000)).is_operator  # this machine: by account
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "10.208.0.1", None, owned_by(1001))
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "127.0.0.1", None, owned_by(1000))  # loopback is not in this trusted_networks


def test_operator_accounts_are_the_secret_files_owner_and_root(tmp_path):
    from common.security import operator_accounts

    path = tmp_path / ".p2p-secret"
    ensure_secret(path)
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
    assert operator_accounts(path) == {os.stat(path).st_uid, 0}
    assert operator_accounts(None) == {os.geteuid(), 0}
