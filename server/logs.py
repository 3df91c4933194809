"""Process logging for the console commands (serve, eval, bench)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str) -> None:
    from server.request_id import RequestIdFilter

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    # On the handler, so records of every logger that reaches it get the id.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    # vLLM configures its own loggers from this on import; --log-level warning quiets them too.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level.upper())
