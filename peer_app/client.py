"""`python -m peer_app.client ...` (docs/api.md; the classic commands): the CLI now lives in client/cli.py."""

from client.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
