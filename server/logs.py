"""Process logging for the console commands (serve, eval, bench).

Two formats (``--log-format``): ``text`` lines for people, or ``json``, one object per
line for a log pipeline: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``request_id`` while a request is served, ``exception`` with a traceback, and the fields
of an ``Event``. Every search request ends with one ``Event`` on the
``alignserve.requests`` logger at INFO (see ``server.observed``): ids, counts and
times, never prompt or answer text.

In JSON, the lines of uvicorn (``uvicorn_log_config``) and of vLLM, in every process it
starts (``VLLM_LOGGING_CONFIG_PATH``), are JSON objects too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

REQUESTS_LOGGER = "alignserve.requests"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class Event:
    """A log message with fields: ``message key=value ...`` in text, the fields as keys
    of the object in JSON. Log it as the message itself: ``logger.info(Event(...))``."""

    def __init__(self, message: str, fields: Mapping[str, Any]) -> None:
        self.message = message
        self.fields = dict(fields)

    def __str__(self) -> str:
        pairs = " ".join(f"{k}={_text(v)}" for k, v in self.fields.items() if v is not None)
        return f"{self.message}: {pairs}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, Event):
            out["message"] = record.msg.message
        else:
            out["message"] = record.getMessage()
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            out["request_id"] = request_id
        if isinstance(record.msg, Event):
            # Fields never replace the keys above: a pipeline can rely on them.
            out.update((k, v) for k, v in record.msg.fields.items() if k not in out)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str, log_format: str = "text") -> None:
    from server.request_id import RequestIdFilter

    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=level.upper())  # a no-op when root has handlers already
    for handler in root.handlers:
        if handler not in before:
            handler.setFormatter(formatter_for(log_format))
        # On the handler, so records of every logger that reaches it get the id.
        handler.addFilter(RequestIdFilter())
    # vLLM configures its own loggers from this on import; --log-level warning quiets them too.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level.upper())
    # Unless the operator configures vLLM's logging (or turned it off: vLLM then refuses
    # a config file, and its loggers propagate to the root handler anyway).
    vllm_own = "VLLM_LOGGING_CONFIG_PATH" in os.environ
    if log_format == "json" and not vllm_own and os.environ.get("VLLM_CONFIGURE_LOGGING") != "0":
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = write_vllm_config(level)


def vllm_log_config(level: str) -> dict[str, Any]:
    """vLLM's logging in JSON: its own handler (its loggers do not propagate), our
    formatter. A dictConfig, which vLLM applies in each process it starts."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "vllm": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {"vllm": {"handlers": ["vllm"], "level": level.upper(), "propagate": False}},
    }


def write_vllm_config(level: str) -> str:
    """The file ``VLLM_LOGGING_CONFIG_PATH`` names (vLLM reads a path, not a value);
    removed when this process exits, after the engine processes that read it."""
    fd, path = tempfile.mkstemp(prefix="alignserve-vllm-logging-", suffix=".json")
    with os.fdopen(fd, "w") as file:
        json.dump(vllm_log_config(level), file)
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config``: its own for text; none for JSON, so its loggers (the
    access log too) reach the root handler set up above, JSON and with request ids."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG


def log_request(fields: Mapping[str, Any]) -> None:
    """The one line of a finished search request."""
    logging.getLogger(REQUESTS_LOGGER).info(Event("request finished", fields))
