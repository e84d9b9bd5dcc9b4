"""The floor to compare the Maestro's /locate with: minimal Flask + one SQLite lookup.

Served by the same gunicorn command line as the Maestro (`bench.locate_baseline:create_app()`),
reading the Maestro's directory file named by $BENCH_DB.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from flask import Flask, jsonify, request


def create_app(db_path: str | None = None) -> Flask:
    db_path = db_path or os.environ["BENCH_DB"]
    local = threading.local()
    app = Flask(__name__)

    @app.get("/locate")
    def locate():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(db_path, check_same_thread=False)
            conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT peer, size, sha256 FROM files WHERE name = ?", (request.args.get("file", ""),)
        ).fetchall()
        return jsonify({"peers": [dict(r) for r in rows]})

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    return app
