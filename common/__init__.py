"""Pieces every p2pnet process shares: node config, errors, safe names, SQLite, stubs."""
