"""The engine's processes end with the server (finding N10 of the 2026-12-07 review).

When the in-process engine's EngineCore died (kill -9), alignserve exited in about 3 s as
it should, but the engine's worker process was re-parented to PID 1 and kept 2.2 GB and a
third of a core for a minute: nobody was left to stop it. So ``serve`` makes the server a
child subreaper (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``) before the engine starts: an
orphaned descendant is re-parented to the server instead of to PID 1, and
``reap_descendants`` stops whatever is left (TERM, then KILL after a grace) once the server
has stopped serving, after a clean shutdown (where vLLM has already stopped its own) and
after a fatal one alike. Elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants; True if it is."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reap_descendants(grace_s: float = 3.0) -> int:
    """Stop every process still below this one; how many there were."""
    import psutil  # a vLLM dependency

    left = psutil.Process().children(recursive=True)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(left, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    if left:
        logger.info("stopped %d leftover process(es) of the engine", len(left))
    return len(left)
