"""The bottom floor, imported by every other package and importing none of them.

Node config and settings (config.py), the error vocabulary with its statuses and exit codes
(errors.py), name rules (names.py), bytes on disk both sides need (files.py), gRPC channel
settings (rpc.py), the HTTP session (http.py), malloc tuning (malloc.py), SQLite (db.py),
Flask and Prometheus plumbing for the two REST apps (web.py, metrics.py, gunicorn_conf.py)
and the generated gRPC stubs.
"""
