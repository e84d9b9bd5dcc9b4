"""The REST servers' request log line, written without gunicorn's per-request atoms.

gunicorn loads it by name (`logger_class` in common/gunicorn_conf.py), so nothing else that
imports the gunicorn config (common.metrics does) pays for importing gunicorn's logging.
"""

from __future__ import annotations

import threading
import time

from gunicorn import glogging

FLUSH_LINES = 64  # lines written together at most ...
FLUSH_AFTER = 0.2  # ... and seconds a line waits at most


class AccessLogger(glogging.Logger):
    """gunicorn's logger, with a lean access line (time, client, request line, status, bytes, ms).

    gunicorn's own access() first builds a dict of "atoms" with every request header, response
    header and environ variable, and decodes the Authorization header, for each request: that
    cost the Maestro ~25% of its /locate requests/s (bench.security, same run). This writes the
    same line from the few fields it shows, with the timestamp formatted once a second.
    """

    _second = -1
    _stamp = ""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def flush_access(self) -> None:
        """Write the lines waiting (one write for all: a line per request, written alone, cost the
        Maestro's saturated /locate its tail, each write a system call in the one gevent thread)."""
        with self._lines_lock:
            lines, self._lines, self._timer = self._lines, [], None
        if lines:
            try:
                self.access_log.info("\n".join(lines))
            except Exception:  # as gunicorn's own access(): a log line never fails the request
                self.error("access log line failed", exc_info=True)

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        now = int(time.time())
        if now != self._second:
            self._second, self._stamp = now, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        ms = request_time.seconds * 1000 + request_time.microseconds // 1000
        try:
            line = (
                f"{self._stamp} {environ.get('REMOTE_ADDR', '-')} "
                f'"{environ["REQUEST_METHOD"]} {environ["RAW_URI"]} {environ["SERVER_PROTOCOL"]}" '
                f"{status} {getattr(resp, 'sent', None)} {ms}ms"
            )
        except Exception:  # as gunicorn's own access(): a log line never fails the request
            self.error("access log line failed", exc_info=True)
            return
        timer = None
        with self._lines_lock:  # nothing in here may yield to another greenlet (this lock may be a real one)
            self._lines.append(line)
            full = len(self._lines) >= FLUSH_LINES
            if not full and self._timer is None:
                timer = self._timer = threading.Timer(FLUSH_AFTER, self.flush_access)
        if full:
            self.flush_access()
        elif timer is not None:
            timer.daemon = True
            timer.start()
