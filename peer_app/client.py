"""`python -m peer_app.client ...` (SPEC §7, the seeds' commands): the CLI now lives in client/cli.py."""

from client.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
