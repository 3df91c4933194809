"""Recording searches for training data (``--record DIR``).

Every recorded search becomes one JSON line: the conversation, every candidate (text,
token ids, per-token logprobs, reward, finish reason), the chosen index, the algorithm
and its options, and what the search spent. Lines go to shards
``records-<start>-<pid>-<seq>.jsonl`` that rotate at ``max_shard_bytes``.

Off the event loop: ``submit`` only puts the record on a queue; a writer thread
serialises and appends it with one unbuffered write per line, so a record is in the
operating system's hands as soon as it is written, and a kill -9 of the server loses at
most the line being written (plus any still queued). The future ``submit`` returns is done
once the line is written: the server waits for it, up to a bound, before answering, so a
client that got its answer has its record on disk. A full queue (the disk cannot keep up)
drops the record and counts it, rather than slow or fail the request; so does any error
while writing.

``read_records`` reads shards back in order and skips (and counts) a line that does not
parse: the tail a crash cut off.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

logger = logging.getLogger(__name__)

SHARD_GLOB = "records-*.jsonl"
Item = tuple[dict[str, Any], Future[None]]


class Recorder:
    def __init__(
        self,
        directory: str | Path,
        *,
        max_shard_bytes: int = 64 * 1024 * 1024,
        max_queued: int = 10_000,
        dropped: Counter | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.written = 0
        self.dropped = 0
        self._dropped_metric = dropped
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=max_queued)
        self._prefix = f"records-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._seq = 0
        self._file: Any = None
        self._thread = threading.Thread(target=self._write_loop, name="recorder", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> Future[None]:
        """Queue a record; never blocks and never raises. The future is done when the
        record is written or dropped."""
        written: Future[None] = Future()
        try:
            self._queue.put_nowait((record, written))
        except queue.Full:
            self._drop("the record queue is full")
            settle(written)
        return written

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop (at shutdown)."""
        self._queue.put(None)  # after everything queued
        self._thread.join(timeout_s)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self._dropped_metric is not None:
            self._dropped_metric.inc()
        logger.warning("record dropped: %s", why)

    def _write_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            record, written = item
            try:
                self._write(json.dumps(record, ensure_ascii=False) + "\n")
                self.written += 1
            except Exception as exc:  # a bad record or a full disk must not stop the thread
                self._drop(f"{type(exc).__name__}: {exc}")
            settle(written)
        if self._file is not None:
            self._file.close()

    def _write(self, line: str) -> None:
        data = line.encode()
        if self._file is None or self._file.tell() + len(data) > self.max_shard_bytes:
            if self._file is not None:
                self._file.close()
            self._seq += 1
            path = self.directory / f"{self._prefix}-{self._seq:05d}.jsonl"
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (kept open across writes)
        self._file.write(data)  # unbuffered: one write() per record


def settle(future: Future[None]) -> None:
    """Mark done, unless the waiter already gave up (cancelled it)."""
    if future.set_running_or_notify_cancel():
        future.set_result(None)


@dataclass
class ReadReport:
    shards: int = 0
    records: int = 0
    damaged: int = 0  # lines that did not parse: cut off by a crash while being written


def read_records(
    directory: str | Path, report: ReadReport | None = None
) -> Iterator[dict[str, Any]]:
    """Every complete record under ``directory``, shard by shard in the order written."""
    report = report if report is not None else ReadReport()
    for shard in sorted(Path(directory).glob(SHARD_GLOB)):
        report.shards += 1
        with shard.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    record = json.loads(raw)
                except ValueError:
                    report.damaged += 1
                    logger.warning(
                        "%s line %d is incomplete (cut off by a crash); skipped", shard, number
                    )
                    continue
                report.records += 1
                yield record
