"""The live page (docs/operations.md): served by the Maestro, read in a real headless Chromium against a real network.

The browser tests skip, saying why, where no Chromium, chromedriver or selenium can be had
(tests/e2e/chromium.py). Screenshots go to the test's tmp folder, or to $P2P_UI_SCREENSHOTS
when set (that is how docs/ui.png is made).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.chromium import chromium
from tests.support import wait_until


@pytest.fixture
def browser():
    with chromium() as driver:
        yield driver


class Page:
    """The page as a person sees it, read through the DOM."""

    def __init__(self, driver, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    def css(self, selector: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def peers(self) -> dict[str, str]:
        return {e.get_attribute("data-peer"): e.get_attribute("data-alive") for e in self.css("[data-peer]")}

    def wait(self, predicate, what: str, timeout: float = 15.0):
        return wait_until(predicate, timeout, interval=0.1, what=what)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("P2P_UI_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.e2e
def test_the_page_shows_the_live_network_and_follows_it(browser, network, shots):
    nodes = network(
        ("peer1", "peer2", "peer3"),
        files={
            "peer1": {"archivo1.txt": b"hola desde peer1\n", "informe.pdf": b"version a" * 1000},
            "peer2": {"archivo2.txt": b"hola desde peer2\n", "informe.pdf": b"version b" * 1000},
            "peer3": {"archivo3.txt": b"hola desde peer3\n", "archivo1.txt": b"hola desde peer1\n"},
        },
    )
    maestro = nodes["maestro"].url
    page = Page(browser, shots)
    browser.get(maestro + "/ui")
    browser.execute_script("window.__sameDocument = true")  # gone if the page ever reloads

    # Peers appear, alive, with their friend links and file counts.
    page.wait(lambda: page.peers() == {"peer1": "true", "peer2": "true", "peer3": "true"}, "three live peers")
    links = {
        (e.get_attribute("data-from"), e.get_attribute("data-to"), e.get_attribute("data-role"))
        for e in page.css("#map path.link")
    }
    assert links == {
        ("peer1", "peer2", "primary"),
        ("peer1", "peer3", "backup"),
        ("peer2", "peer3", "primary"),
        ("peer2", "peer1", "backup"),
        ("peer3", "peer1", "primary"),
        ("peer3", "peer2", "backup"),
    }
    assert page.css('[data-peer="peer3"] text.count')[0].text == "2"

    # The directory lists holders and flags the file whose holders disagree.
    page.wait(lambda: page.css('#directory tr[data-file="informe.pdf"][data-conflict="true"]'), "the conflict flag")
    row = page.css('#directory tr[data-file="archivo1.txt"]')[0]
    assert row.get_attribute("data-conflict") == "false"
    assert {c.get_attribute("data-holder") for c in row.find_elements("css selector", ".chip")} == {"peer1", "peer3"}
    assert "2 different sha256" in page.css('#directory tr[data-file="informe.pdf"]')[0].text
    page.shot("1-all-alive")

    # A search shows its results and which peers it reached.
    page.css("#search-input")[0].send_keys("archivo")
    page.css("#search-form button")[0].click()
    page.wait(lambda: page.css("#search-summary[data-state=done]"), "the search's answer")
    results = {
        li.get_attribute("data-file"): {
            c.get_attribute("data-holder") for c in li.find_elements("css selector", ".chip")
        }
        for li in page.css("#search-results li")
    }
    assert results == {"archivo1.txt": {"peer1", "peer3"}, "archivo2.txt": {"peer2"}, "archivo3.txt": {"peer3"}}
    summary = page.css("#search-summary")[0].text
    assert "Reached 3 peer(s)" in summary, summary
    page.wait(
        lambda: (
            {e.get_attribute("data-peer") for e in page.css('[data-reached="true"]')} == {"peer1", "peer2", "peer3"}
        ),
        "the reached peers marked on the map",
    )
    page.shot("2-search")

    # A stopped peer turns not alive on the page, without a reload.
    nodes["peer2"].stop()
    page.wait(lambda: page.peers().get("peer2") == "false", "peer2 shown not alive", timeout=20)
    assert page.peers() == {"peer1": "true", "peer2": "false", "peer3": "true"}
    assert "not alive" in page.css('#peers tr[data-row="peer2"]')[0].text
    assert browser.execute_script("return window.__sameDocument") is True
    page.shot("3-peer2-stopped")

    # Nothing came from anywhere but the Maestro, and the page logged no error.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    assert resources and all(r.startswith(maestro + "/") for r in resources), resources
    assert page.errors() == []

    # The Maestro gone: the page says so, keeps the last state, and tries again.
    nodes["maestro"].stop()
    page.wait(lambda: page.css("#status[data-state=down]"), "the Maestro-down notice")
    assert "python launcher.py status" in page.css("#status")[0].text
    assert page.peers()["peer1"] == "true"
    page.shot("4-maestro-down")
    print(f"screenshots in {shots}")
