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

Records hold user conversations (finding M7 of the 2026-12-07 review): the directory is
created 0700 and each shard 0600, whatever the umask; the queue is bounded by bytes
(``max_queued_bytes``, an estimate taken without serialising on the event loop), not only
by count; ``max_total_bytes`` (``--record-max-total-mb``) deletes the oldest shards of the
directory once a rotation takes it past the quota, so a long-running server cannot fill
the disk. Non-finite numbers are written as null: NaN or Infinity is not JSON and must not
reach training data.

``read_records`` reads shards back in order and skips (and counts) a line that does not
parse: the tail a crash cut off.
"""

from __future__ import annotations

import json
import logging
import math
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
Item = tuple[dict[str, Any], Future[None], int]  # a record, its future, its size


class Recorder:
    def __init__(
        self,
        directory: str | Path,
        *,
        max_shard_bytes: int = 64 * 1024 * 1024,
        max_queued: int = 10_000,
        max_queued_bytes: int = 256 * 1024 * 1024,
        max_total_bytes: int | None = None,
        dropped: Counter | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.max_queued_bytes = max_queued_bytes
        self.max_total_bytes = max_total_bytes
        self.written = 0
        self.dropped = 0
        self._dropped_metric = dropped
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=max_queued)
        self._queued_bytes = 0
        self._lock = threading.Lock()  # _queued_bytes: the loop adds, the writer subtracts
        self._prefix = f"records-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._seq = 0
        self._file: Any = None
        self._thread = threading.Thread(target=self._write_loop, name="recorder", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> Future[None]:
        """Queue a record; never blocks and never raises. The future is done when the
        record is written or dropped."""
        written: Future[None] = Future()
        size = approx_bytes(record)
        with self._lock:
            full = self._queued_bytes + size > self.max_queued_bytes
            if not full:
                self._queued_bytes += size
        if full:
            self._drop(f"the record queue holds more than {self.max_queued_bytes} bytes")
            settle(written)
            return written
        try:
            self._queue.put_nowait((record, written, size))
        except queue.Full:
            self._dequeued(size)
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

    def _dequeued(self, size: int) -> None:
        with self._lock:
            self._queued_bytes -= size

    def _write_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            record, written, size = item
            try:
                self._write(finite_json(record) + "\n")
                self.written += 1
            except Exception as exc:  # a bad record or a full disk must not stop the thread
                self._drop(f"{type(exc).__name__}: {exc}")
            self._dequeued(size)
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
            # 0600 whatever the umask: the lines hold user conversations.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab", buffering=0)
            self._enforce_quota(keep=path)
        self._file.write(data)  # unbuffered: one write() per record

    def _enforce_quota(self, keep: Path) -> None:
        """Delete the oldest shards while the directory holds more than max_total_bytes
        (never ``keep``, the shard being written)."""
        if self.max_total_bytes is None:
            return
        shards = sorted(self.directory.glob(SHARD_GLOB))  # names sort in the order written
        sizes = {shard: shard.stat().st_size for shard in shards}
        total = sum(sizes.values())
        for shard in shards:
            if total <= self.max_total_bytes or shard == keep:
                break
            shard.unlink(missing_ok=True)
            total -= sizes[shard]
            logger.info("record shard %s deleted: over --record-max-total-mb", shard.name)


def approx_bytes(record: dict[str, Any]) -> int:
    """About what ``record`` takes as JSON, without serialising it (which the event loop
    would pay for): its text, and some 30 bytes per token id and logprob."""
    size = 1024 + sum(len(str(m.get("content", ""))) for m in record.get("conversation", []))
    for candidate in record.get("candidates", []):
        size += len(candidate.get("text", "")) + 30 * len(candidate.get("token_ids", []))
    return size


def finite_json(record: dict[str, Any]) -> str:
    """``record`` as one JSON line; NaN and the infinities (not JSON) become null."""
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(nulled(record), ensure_ascii=False, allow_nan=False)


def nulled(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nulled(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nulled(v) for v in value]
    return value


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
