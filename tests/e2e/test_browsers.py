"""Browsers are strangers, end to end: a real headless Chromium runs another site's page against a real network.

DNS rebinding, as an attacker does it: Chromium loads a page from http://evil.test:P, a name
mapped to 127.0.0.1 (--host-resolver-rules), served by a small server of the test. That server
then goes and a real Maestro starts on the same port P, so the page's own origin now leads to
the Maestro, as when the attacker's DNS re-points evil.test at 127.0.0.1. The page's script
reads /peers and re-registers peer1 with its own URLs and sha256, as the operator would from
loopback. Then a cross-site form posts to a peer's /refresh. Both must change nothing
(docs/security.md, "Host check" and "Cross-site requests").
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import requests

from common.security import ensure_secret
from tests.e2e.attacks import forged_entry
from tests.e2e.chromium import chromium
from tests.support import Node, free_port, metric_value, node_configs, wait_until, write_nodes

ORIGINAL = b"uno\n"
FORGED = forged_entry()

# The attacker's page: wait until its origin leads to the Maestro, read the directory, then
# re-register peer1 (once peer1 is listed, so the forgery would not be undone by peer1's own
# first registration), and leave what it saw in window.__result.
REBINDING_PAGE = """<!doctype html><title>cute cats</title><script>
const forged = %s;
async function attempt() {
  let peers;
  try { peers = await fetch("/peers", {cache: "no-store"}); } catch (e) { return false; }
  const text = await peers.text();
  if (text.includes("attacker's server")) return false;
  if (peers.status === 200 && !text.includes('"peer1"')) return false;
  const register = await fetch("/register", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(forged)});
  window.__result = {origin: location.origin, peers: [peers.status, text],
                     register: [register.status, await register.text()]};
  return true;
}
window.__started = true;
(async () => { while (!(await attempt())) await new Promise(r => setTimeout(r, 100)); })();
</script>"""

FORM_PAGE = """<!doctype html><title>win a prize</title>
<form id="f" method="POST" action="%s/refresh"></form>
<script>document.getElementById("f").submit();</script>"""


class AttackerSite(http.server.ThreadingHTTPServer):
    """The attacker's web server: one page at /, "not found" elsewhere; HTTP/1.0, so no connection outlives it."""

    daemon_threads = True

    def __init__(self, port: int, page: str) -> None:
        page_bytes = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page_bytes if self.path == "/" else b"the attacker's server: nothing here\n"
                self.send_response(200 if self.path == "/" else 404)
                self.send_header("Content-Type", "text/html" if self.path == "/" else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@contextmanager
def network(tmp_path: Path) -> Iterator[dict[str, Node]]:
    """A Maestro and peer1 (sharing archivo1.txt) with a secret file; started by the caller, stopped here."""
    configs = node_configs(tmp_path, ["peer1"])
    secret = tmp_path / ".p2p-secret"
    ensure_secret(secret)
    configs = {n: replace(c, security=replace(c.security, secret_file=str(secret))) for n, c in configs.items()}
    (Path(configs["peer1"].shared_dir) / "archivo1.txt").write_bytes(ORIGINAL)
    nodes = write_nodes(tmp_path, configs)
    try:
        yield nodes
    finally:
        for node in reversed(list(nodes.values())):
            node.stop()


def start(nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        node.start()
    for node in nodes.values():
        node.wait_healthy()


def holders(maestro: str) -> list[dict]:
    resp = requests.get(maestro + "/locate", params={"file": "archivo1.txt"}, timeout=5)
    return resp.json()["peers"] if resp.status_code == 200 else []


def test_a_page_rebound_to_the_maestro_reads_and_changes_nothing(tmp_path):
    with network(tmp_path) as nodes, chromium("--host-resolver-rules=MAP evil.test 127.0.0.1") as browser:
        maestro = nodes["maestro"]
        port = maestro.config.rest_port
        site = AttackerSite(port, REBINDING_PAGE % json.dumps(FORGED))
        try:
            browser.get(f"http://evil.test:{port}/")
            wait_until(lambda: browser.execute_script("return window.__started === true"), what="the attack page")
        finally:
            site.stop()  # evil.test:P now leads to whatever listens on 127.0.0.1:P next: the Maestro
        start(nodes)

        result = wait_until(lambda: browser.execute_script("return window.__result"), 30, what="the page's attack")
        assert result["origin"] == f"http://evil.test:{port}"
        seen = {what: (status, body[:300]) for what, (status, body) in (("peers", result["peers"]),
                                                                         ("register", result["register"]))}  # fmt: skip
        assert [seen["peers"][0], seen["register"][0]] == [421, 421], seen
        assert all(json.loads(body)["error"] == "misdirected_request" for _, body in seen.values()), seen

        real = wait_until(lambda: holders(maestro.url), what="peer1's own registration")
        assert [(h["name"], h["rest_url"], h["sha256"]) for h in real] == [
            ("peer1", nodes["peer1"].url, hashlib.sha256(ORIGINAL).hexdigest())
        ]


def test_a_cross_site_form_cannot_make_a_peer_refresh_and_curl_still_can(tmp_path):
    with network(tmp_path) as nodes:
        start(nodes)
        peer = nodes["peer1"].url.replace("127.0.0.1", "localhost")  # as the seeds write it
        site = AttackerSite(free_port(), FORM_PAGE % peer)
        try:
            with chromium("--host-resolver-rules=MAP evil.test 127.0.0.1") as browser:
                browser.get(f"http://evil.test:{site.server_port}/")
                wait_until(lambda: browser.current_url.endswith("/refresh"), what="the form's post")
                answer = wait_until(lambda: browser.find_element("tag name", "body").text, what="the peer's answer")
        finally:
            site.stop()
        assert json.loads(answer).get("error") == "cross_site", answer
        metrics = requests.get(peer + "/metrics", timeout=5).text
        counts = {s: metric_value(metrics, "p2p_http_requests_total", endpoint="/refresh", method="POST", status=s)
                  for s in ("200", "403")}  # fmt: skip
        assert counts == {"200": 0, "403": 1}
        assert requests.post(peer + "/refresh", timeout=10).status_code == 200  # the seeds' curl -X POST
