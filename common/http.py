"""The one way p2pnet makes an HTTP session: never through a proxy from the environment."""

from __future__ import annotations

import requests


def new_session() -> requests.Session:
    """A requests session that ignores HTTP(S)_PROXY and friends (loopback and LAN traffic must go direct)."""
    session = requests.Session()
    session.trust_env = False
    return session
