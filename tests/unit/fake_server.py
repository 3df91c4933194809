"""A real uvicorn server (the production ``serve``) over the fake runtime, whose every
engine call takes DELAY seconds: for the shutdown tests. Run as
``python -m tests.unit.fake_server PORT DELAY GRACE``."""

from __future__ import annotations

import sys

from server.app import create_app
from server.cli import serve
from server.settings import Settings
from tests.unit.conftest import make_runtime, scripted

if __name__ == "__main__":
    port, delay, grace = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    settings = Settings(port=port, shutdown_grace_s=grace, log_level="info")
    serve(settings, app=create_app(settings, runtime=make_runtime(scripted(delay_s=delay))))
