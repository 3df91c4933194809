"""N10: an engine process orphaned while the server runs is stopped when the server ends
(server.reaper), instead of running on under PID 1."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT

# The server's part: adopt orphans, start a child that starts a grandchild and dies (as
# EngineCore dies, leaving its worker), then reap. Prints the grandchild's pid and whose
# child it became.
SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from server.reaper import adopt_orphans, reap_descendants
    assert adopt_orphans()
    parent = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print(p.pid, flush=True)"], stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    parent.wait()
    time.sleep(0.2)
    with open(f"/proc/{grandchild}/stat") as f:
        adopted_by = int(f.read().rsplit(")", 1)[1].split()[1])
    print(grandchild, adopted_by == os.getpid(), reap_descendants(grace_s=5), flush=True)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_n10_an_orphaned_engine_process_is_adopted_and_stopped() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    grandchild, adopted, reaped = done.stdout.split()
    assert adopted == "True" and int(reaped) >= 1
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{grandchild}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{grandchild}"), "the orphan is still running"
