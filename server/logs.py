"""Process logging for the console commands (serve, eval, bench)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # vLLM configures its own loggers from this on import; --log-level warning quiets them too.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level.upper())
