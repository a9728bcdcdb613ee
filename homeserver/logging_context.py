"""Request ids in log lines: a context variable set per HTTP request.

Coroutines run through ``defer.ensureDeferred`` keep the context they were started in,
so every log line a request causes carries its id. Log lines never carry access
tokens, passwords or message bodies.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import os
import sys

import yaml

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request = current_request_id.get()
        return True


def setup_logging(log_config_path: str | None, *, verbose: bool = False) -> None:
    if log_config_path and os.path.exists(log_config_path):
        with open(log_config_path, encoding="utf-8") as f:
            logging.config.dictConfig(yaml.safe_load(f))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(request)s - %(message)s")
        )
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Route Twisted's own log events into the standard logging tree.
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo(
        [STDLibLogObserver()],  # type: ignore[list-item]
        redirectStandardIO=False,
    )
