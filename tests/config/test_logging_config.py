"""Log configs: the generated one, and a Synapse admin's, both work as written."""

from __future__ import annotations

import logging
import logging.config
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from homeserver.config import generate_log_config
from homeserver.logging_context import (
    PeriodicallyFlushingMemoryHandler,
    current_request_id,
    translate_synapse_log_config,
)

# As Synapse's `generate_config` writes it (synapse/config/logger.py), trimmed.
SYNAPSE_LOG_CONFIG = """
version: 1
formatters:
    precise:
        format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
filters:
    context:
        (): synapse.logging.context.LoggingContextFilter
        request: ""
handlers:
    file:
        class: logging.handlers.TimedRotatingFileHandler
        formatter: precise
        filename: {path}
        when: midnight
        backupCount: 3
        filters: [context]
        encoding: utf8
    buffer:
        class: synapse.logging.handlers.PeriodicallyFlushingMemoryHandler
        target: file
        capacity: 10
        flushLevel: 30
        period: 5
loggers:
    synapse.storage.SQL:
        level: INFO
root:
    level: INFO
    handlers: [buffer]
disable_existing_loggers: false
"""


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_a_synapse_log_config_works_unchanged(tmp_path: Path, restore_logging: None) -> None:
    log = tmp_path / "homeserver.log"
    config = yaml.safe_load(SYNAPSE_LOG_CONFIG.format(path=log))
    logging.config.dictConfig(translate_synapse_log_config(config))
    [buffer] = logging.getLogger().handlers
    assert isinstance(buffer, PeriodicallyFlushingMemoryHandler)
    token = current_request_id.set("GET-42")
    try:
        logging.getLogger("homeserver.test").info("held in the buffer")
    finally:
        current_request_id.reset(token)
    assert _lines(log) == []  # below capacity and flushLevel: not written yet
    logging.getLogger("homeserver.test").warning("a warning flushes")
    lines = _lines(log)
    assert len(lines) == 2
    assert "GET-42 - held in the buffer" in lines[0]
    assert "WARNING" in lines[1]


def test_the_buffer_is_flushed_periodically(tmp_path: Path, restore_logging: None) -> None:
    target = logging.FileHandler(tmp_path / "out.log", encoding="utf8")
    handler = PeriodicallyFlushingMemoryHandler(capacity=100, target=target, period=0.05)
    logger = logging.getLogger("homeserver.test.periodic")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("x")  # flushLevel is ERROR by default: stays buffered
        deadline = 200
        while not _lines(tmp_path / "out.log") and deadline:
            deadline -= 1
            time.sleep(0.01)
        assert _lines(tmp_path / "out.log") == ["x"]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
        target.close()


def test_the_generated_config_logs_info_to_the_file_only(
    tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "homeserver.log"
    logging.config.dictConfig(yaml.safe_load(generate_log_config(str(log))))
    logger = logging.getLogger("homeserver.test.generated")
    for i in range(10):  # a full buffer is handed to the file
        logger.info("line %d", i)
    logger.error("boom")
    assert len(_lines(log)) == 11
    err = capsys.readouterr().err
    assert "boom" in err and "line 0" not in err
