"""The client library and the CLI, apart from the servers.

A download reads in one direction: cli.py (the command) -> api.py (REST: locate at the
Maestro) -> download.py (pieces from several holders) -> transfer.py (one gRPC channel
per holder) and partial.py (the partial file, its journal, the hasher). Servers may use
api.py (a peer registers, bootstraps and floods searches through it); nothing here imports
a server.
"""

__version__ = "0.1.0"  # the project's one version (pyproject.toml reads it; `p2p --version` prints it)
