"""The security review's "unbounded input", "swap races and links" and "socket squatting" findings, replayed
against real processes (tests/e2e/attacks_bounds.py): each is refused cleanly, with the right
status, and nothing is written or leaked.

The source address does not matter for these bounds, so the attacker calls from loopback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import requests

from common.config import Settings
from tests.e2e import attacks_bounds as attacks

pytestmark = pytest.mark.e2e

SMALL = Settings(heartbeat_interval=0.5, request_timeout=1.0, rest_workers=1, max_body_bytes=2 * 1024 * 1024)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """One Maestro and peer1 for the whole module (each attack uses names of its own)."""
    net = attacks.start_net(tmp_path_factory.mktemp("bounds"), SMALL)
    yield net
    attacks.stop_net(net)


def test_a_body_over_max_body_bytes_is_a_413_at_both_apps_and_costs_no_memory(net):
    maestro = attacks.attack_big_body(net.maestro, mib=20)
    peer = attacks.attack_big_body(net.peer, mib=20)
    assert (maestro["status"], maestro["error"]) == (413, "too_large")
    assert (peer["status"], peer["error"]) == (413, "too_large")
    assert maestro["worker_peak_growth_mib"] < 10 and peer["worker_peak_growth_mib"] < 10


def test_a_chunked_body_cannot_bypass_the_limit(net):
    for node in (net.maestro, net.peer):
        result = attacks.attack_big_body(node, mib=20, chunked=True)
        assert result["status"] in (413, "ConnectionError"), result  # 413, or cut once the limit is read
        assert result["worker_peak_growth_mib"] < 10, result


def test_registrations_are_capped_and_the_directory_answer_is_bounded(net):
    cap = SMALL.max_files_per_peer
    over = requests.post(
        net.maestro.url + "/register", json=attacks.register_body("many", attacks.fake_files(cap + 1)), timeout=30
    )
    assert (over.status_code, over.json()["error"]) == (413, "too_large")
    for i in range(3):
        body = attacks.register_body(f"full{i}", attacks.fake_files(cap, prefix=f"p{i}-"))
        resp = requests.post(net.maestro.url + "/register", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
    first = requests.get(net.maestro.url + "/directory", timeout=30)
    page = first.json()
    assert len(first.content) < 1024 * 1024
    assert page["count"] == len(page["files"]) <= 1000 and page["total"] >= 3 * cap and page["next"]
    seen, after = len(page["files"]), page["next"]
    while after:
        page = requests.get(net.maestro.url + "/directory", params={"after": after, "limit": 5000}, timeout=30).json()
        seen, after = seen + page["count"], page["next"]
    assert seen == page["total"]


@pytest.mark.parametrize(
    ("case", "entry"),
    [
        ("size 2^70", {"size": 2**70}),
        ("size 2^63", {"size": 2**63}),
        ("size -1", {"size": -1}),
        ("size 1.5", {"size": 1.5}),
        ("mtime NaN", {"mtime": math.nan}),
        ("mtime Infinity", {"mtime": math.inf}),
        ("mtime 1e300", {"mtime": 1e300}),
        ("no sha256", {"sha256": ""}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_numbers_out_of_range_are_a_400_never_a_500(net, case, entry):
    result = attacks.register_entry(net, entry)
    assert (result["status"], result["error"]) == (400, "bad_request"), case


@pytest.mark.parametrize("interval", [3600, 1e-9, math.nan, -1, "2"], ids=str)
def test_a_heartbeat_interval_out_of_range_is_a_400(net, interval):
    resp = attacks.post_json(
        net.maestro.url + "/register", attacks.register_body("beats", [], heartbeat_interval=interval)
    )
    assert resp.status_code == 400, resp.text


def test_an_upload_without_sha256_is_refused_and_nothing_is_stored(net):
    result = attacks.attack_upload_without_hash(net)
    assert result["status"] == "INVALID_ARGUMENT" and not result["stored"], result
    assert not [n for n in os.listdir(net.shared) if n.startswith(".p2p-tmp-")]


def test_a_252_byte_emoji_name_is_stored_and_an_overlong_one_refused_without_a_path(net):
    result = attacks.attack_emoji_name(net)
    assert result["status"] == "OK" and result["files"], result
    status, detail = attacks.upload(net, attacks.EMOJI_252 + "\U0001f600", b"too long")
    assert status == "INVALID_ARGUMENT" and "/" not in detail, detail


def test_nfc_and_nfd_twins_cannot_both_exist(net):
    result = attacks.attack_twins(net)
    assert result == {"nfc_status": "OK", "nfd_status": "ALREADY_EXISTS", "files_named_cafe": 1}


@pytest.mark.parametrize("label", ["rtlo", "c1", "zwj", "trailing_dot", "trailing_space"])
def test_control_and_format_characters_are_refused_at_the_peer_and_the_maestro(net, label):
    result = attacks.attack_format_names(net, [label])[label]
    assert result == {"upload": "INVALID_ARGUMENT", "stored": False, "register": 400}


def test_a_file_symlink_swap_never_serves_the_outside_file(net):
    result = attacks.attack_swap_race(net, tries=400)
    assert result["leaks"] == 0, result
    assert set(result["outcomes"]) <= {"OK", "PERMISSION_DENIED", "NOT_FOUND"}, result
    assert result["outcomes"].get("OK", 0) > 0 and result["flips"] > 400, result


def test_a_symlink_to_a_hidden_file_is_neither_listed_nor_served(net):
    result = attacks.attack_symlink_to_hidden(net)
    assert result == {"listed": False, "download": "PERMISSION_DENIED", "served_hidden_bytes": False}


def test_a_hardlink_to_an_outside_file_is_neither_listed_nor_served(net):
    result = attacks.attack_hardlink(net)
    assert result == {"listed": False, "download": "PERMISSION_DENIED", "served_outside_bytes": False}


def test_a_squatted_socket_folder_is_refused_with_one_line(tmp_path):
    result = attacks.attack_socket_squat(tmp_path)
    assert result["fallback_used"] and result["requests_to_squatter"] == 0, result
    assert "not to you" in result["launcher_said"] or "open to others" in result["launcher_said"], result


def test_the_run_folder_and_the_socket_folder_are_private(tmp_path):
    deep = attacks.deep_topology(tmp_path)
    env = {**os.environ, attacks.RUNTIME_ENV: str(tmp_path / "runtime")}
    proc = attacks.launcher("render", deep, env)
    assert proc.returncode == 0, proc.stderr
    assert (Path(deep).parent / ".run" / "topology").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "runtime").stat().st_mode & 0o777 == 0o700
