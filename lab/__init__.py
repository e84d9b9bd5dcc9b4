"""Real networks in network namespaces (extra hosts, strangers' addresses, capped links), shared by tests and bench."""
