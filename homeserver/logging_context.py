"""Request ids in log lines: a context variable set per HTTP request.

Coroutines run through ``defer.ensureDeferred`` keep the context they were started in,
so every log line a request causes carries its id. Log lines never carry access
tokens, passwords or message bodies.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import logging.handlers
import os
import sys
import threading
from typing import Any

import yaml

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request"):  # a buffer stamped it when the line was made
            record.request = current_request_id.get()
        return True


class PeriodicallyFlushingMemoryHandler(logging.handlers.MemoryHandler):
    """Holds up to ``capacity`` records for its target, handing them over when full, on a
    record at ``flushLevel`` or above, and at least every ``period`` seconds.

    Synapse's handler of that name and options, so a Synapse log config works as it is.
    """

    def __init__(
        self,
        capacity: int,
        flushLevel: int = logging.ERROR,  # noqa: N803 - the dictConfig key, as Synapse's
        target: logging.Handler | None = None,
        flushOnClose: bool = True,  # noqa: N803
        period: float = 5.0,
    ) -> None:
        super().__init__(capacity, flushLevel, target, flushOnClose)
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(period,), name="log-flusher", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        # The target's filters run at flush time, in another request's context (or the
        # flusher thread's): take the request id now.
        if not hasattr(record, "request"):
            record.request = current_request_id.get()
        super().emit(record)

    def _flush_every(self, period: float) -> None:
        while not self._stopped.wait(period):
            self.flush()

    def close(self) -> None:
        self._stopped.set()
        super().close()


# A Synapse log config names Synapse's classes; ours do the same job.
_SYNAPSE_LOG_CLASSES = {
    "synapse.logging.context.LoggingContextFilter": f"{__name__}.RequestIdFilter",
    "synapse.logging.handlers.PeriodicallyFlushingMemoryHandler": (
        f"{__name__}.PeriodicallyFlushingMemoryHandler"
    ),
}


def translate_synapse_log_config(config: dict[str, Any]) -> dict[str, Any]:
    """The dictConfig ``config`` with Synapse's filter and handler classes replaced by
    ours (Synapse's filter also takes a ``request`` argument, which ours has no use for)."""
    for section, key in (("filters", "()"), ("handlers", "class")):
        entries = config.get(section)
        if not isinstance(entries, dict):
            continue
        for entry in entries.values():
            if isinstance(entry, dict) and entry.get(key) in _SYNAPSE_LOG_CLASSES:
                entry[key] = _SYNAPSE_LOG_CLASSES[entry[key]]
                if section == "filters":
                    entry.pop("request", None)
    return config


def setup_logging(log_config_path: str | None, *, verbose: bool = False) -> None:
    if log_config_path and os.path.exists(log_config_path):
        with open(log_config_path, encoding="utf-8") as f:
            logging.config.dictConfig(translate_synapse_log_config(yaml.safe_load(f)))
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
