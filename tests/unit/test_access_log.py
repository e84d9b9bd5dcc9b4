"""The REST servers' request log line: gunicorn's own format, written by the lean AccessLogger."""

from __future__ import annotations

import datetime
import logging
import re

from gunicorn import glogging
from gunicorn.config import Config

from common.access_log import AccessLogger

GUNICORN_FORMAT = '%(t)s %(h)s "%(r)s" %(s)s %(B)s %(M)sms'  # what the line looked like through gunicorn's atoms


class Response:
    status = "404 NOT FOUND"
    sent = 58
    headers = [("Content-Type", "application/json")]


class Request:
    headers = [("Host", "127.0.0.1"), ("Authorization", "Bearer secret.token")]


def line_of(logger_class, caplog) -> str:
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", GUNICORN_FORMAT)
    logger = logger_class(config)
    logger.access_log.addHandler(caplog.handler)
    environ = {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/locate?file=a%20b.txt",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_AUTHORIZATION": "Bearer secret.token",
    }
    caplog.clear()
    logger.access(Response(), Request(), environ, datetime.timedelta(seconds=1, microseconds=2500))
    getattr(logger, "flush_access", lambda: None)()  # ours writes its lines together
    (record,) = [r for r in caplog.records if r.name == "gunicorn.access"]
    return record.getMessage()


def test_the_lean_line_is_gunicorns_line_without_the_token(caplog):
    caplog.set_level(logging.INFO, logger="gunicorn.access")
    ours, theirs = line_of(AccessLogger, caplog), line_of(glogging.Logger, caplog)
    stamp = r"^\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
    assert re.match(stamp, ours) and re.match(stamp, theirs)
    assert ours.split("] ", 1)[1] == theirs.split("] ", 1)[1]  # the same line (the second may have turned)
    assert ours.endswith(' 10.0.0.7 "GET /locate?file=a%20b.txt HTTP/1.1" 404 58 1002ms')
    assert "secret" not in ours
