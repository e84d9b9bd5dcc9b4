"""Moved to common/credentials.py (one credential type for the client, the launcher and the nodes)."""

from common.credentials import NONE, Credentials

__all__ = ["NONE", "Credentials"]
