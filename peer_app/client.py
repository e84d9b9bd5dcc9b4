"""`python -m peer_app.client ...` (SPEC §7, the seeds' commands): the CLI now lives in client/cli.py."""

import sys

from client.cli import main

if __name__ == "__main__":
    sys.exit(main())
