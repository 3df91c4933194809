"""Search records (``--record``) and ``alignserve export``: the writer thread, shard
rotation, a cut-off last line, the per-request switch, and the three training sets."""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from server import search_service
from server.recording import ReadReport, Recorder, read_records
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime
from tests.unit.test_server_errors import assert_error
from tools.export import export

URL = "/v1/chat/completions"
GOOD = {"model": "m", "messages": USER, "search": {"n": 4}}


def record(i: int, rewards: list[float], *, chosen: int = 0, rewarded: bool = True) -> dict:
    return {
        "id": f"r{i}",
        "algorithm": "bon",
        "conversation": [{"role": "user", "content": f"q{i}"}],
        "candidates": [
            {"text": f"a{i}-{j}", "token_ids": [j], "logprobs": [-0.5], "reward": r}
            for j, r in enumerate(rewards)
        ],
        "chosen_index": chosen,
        "rewarded": rewarded,
    }


def test_records_rotate_and_read_back_in_order(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, max_shard_bytes=600)
    for i in range(10):
        recorder.submit(record(i, [0.1, 0.9]))
    recorder.close()
    report = ReadReport()
    back = list(read_records(tmp_path, report))
    assert [r["id"] for r in back] == [f"r{i}" for i in range(10)]
    assert recorder.written == 10 and report.shards == len(list(tmp_path.glob("*.jsonl"))) > 1
    assert report.damaged == 0


def test_a_line_cut_off_by_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    for i in range(3):
        recorder.submit(record(i, [0.1, 0.9]))
    recorder.close()
    (shard,) = tmp_path.glob("*.jsonl")
    with shard.open("ab") as f:
        f.write(json.dumps(record(3, [0.2])).encode()[:40])  # the write a kill -9 interrupted
    report = ReadReport()
    assert [r["id"] for r in read_records(tmp_path, report)] == ["r0", "r1", "r2"]
    assert (report.records, report.damaged) == (3, 1)


def test_a_bad_record_is_dropped_and_the_writer_goes_on(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    recorder.submit({"not json": object()})
    recorder.submit(record(1, [0.5, 0.6]))
    recorder.close()
    assert recorder.dropped == 1 and recorder.written == 1
    assert [r["id"] for r in read_records(tmp_path)] == ["r1"]


async def test_the_server_records_each_search(serve_app: Any, tmp_path: Path) -> None:
    settings = Settings(record=str(tmp_path))
    async with serve_app(make_runtime(), settings) as client:
        r = await client.post(URL, json=GOOD)
        assert r.status_code == 200
        skipped = await client.post(URL, json={**GOOD, "search": {"n": 4, "record": False}})
        assert skipped.status_code == 200
    (only,) = list(read_records(tmp_path))  # the lifespan closed the recorder
    assert only["id"] == r.json()["id"] and only["algorithm"] == "bon"
    assert only["conversation"] == USER
    assert [c["text"] for c in only["candidates"]] == ["one", "three", "three", "seven"]
    assert [c["reward"] for c in only["candidates"]] == [0.1, 0.8, 0.8, 0.5]
    first = only["candidates"][0]
    assert first["token_ids"] == [ord(ch) for ch in "one"]
    assert first["logprobs"] == pytest.approx([-0.1] * 3)  # asked of the engine for the record
    assert only["chosen_index"] == 1 and only["rewarded"] is True


def test_m7_records_are_private_to_the_server_user(tmp_path: Path) -> None:
    directory = tmp_path / "records"
    old = os.umask(0o022)  # the usual umask made them 0644 in a 0755 directory
    try:
        recorder = Recorder(directory)
        recorder.submit(record(0, [0.1]))
        recorder.close()
    finally:
        os.umask(old)
    (shard,) = directory.glob("*.jsonl")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(shard.stat().st_mode) == 0o600


def test_m7_the_queue_is_bounded_by_bytes(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, max_queued_bytes=4096)
    big = record(0, [0.1])
    big["candidates"][0]["token_ids"] = list(range(1000))  # ~30 kB estimated: over the bound
    recorder.submit(big).result(5)
    recorder.submit(record(1, [0.2])).result(5)
    recorder.close()
    assert (recorder.dropped, recorder.written) == (1, 1)
    assert [r["id"] for r in read_records(tmp_path)] == ["r1"]


def test_m7_retention_deletes_the_oldest_shards(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, max_shard_bytes=300, max_total_bytes=900)
    for i in range(30):
        recorder.submit(record(i, [0.1, 0.9]))
    recorder.close()
    shards = sorted(tmp_path.glob("*.jsonl"))
    assert sum(s.stat().st_size for s in shards) <= 900 + 300  # the quota and the open shard
    kept = [r["id"] for r in read_records(tmp_path)]
    assert kept and kept[-1] == "r29" and "r0" not in kept  # the newest stay
    assert kept == [f"r{i}" for i in range(30 - len(kept), 30)]


def test_m7_non_finite_rewards_are_written_as_null(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    recorder.submit(record(0, [math.inf, math.nan, 0.5]))
    recorder.close()
    (shard,) = tmp_path.glob("*.jsonl")
    assert "Infinity" not in shard.read_text() and "NaN" not in shard.read_text()
    (back,) = read_records(tmp_path)
    assert [c["reward"] for c in back["candidates"]] == [None, None, 0.5]


async def test_m7_a_slow_disk_does_not_hold_the_admission_slot(
    serve_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slot. The first search's record takes 2 s to write; the second search must
    # not wait for it (on the old code it waited inside the first one's slot).
    settings = Settings(record=str(tmp_path), max_concurrent_searches=1)
    written = threading.Event()
    real_write = Recorder._write

    def slow_write(self: Recorder, line: str) -> None:
        if not written.is_set():
            written.set()
            time.sleep(2.0)
        real_write(self, line)

    monkeypatch.setattr(Recorder, "_write", slow_write)
    monkeypatch.setattr(search_service, "RECORD_WAIT_S", 5.0)  # the first waits for its record
    async with serve_app(make_runtime(), settings) as client:
        first = asyncio.ensure_future(client.post(URL, json=GOOD))
        while not written.is_set():
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        second = await client.post(URL, json={**GOOD, "search": {"n": 4, "record": False}})
        waited = time.perf_counter() - start
        assert second.status_code == 200 and (await first).status_code == 200
    assert waited < 1.5, waited
    (only,) = list(read_records(tmp_path))
    assert only["id"] == (await first).json()["id"]  # answered after its record was written


async def test_record_on_a_server_that_does_not_record_is_400(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json={**GOOD, "search": {"record": True}})
    assert_error(r, 400, "invalid_request_error", "search.record")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_writes_the_three_training_sets(tmp_path: Path) -> None:
    records = [
        record(0, [0.2, 0.9, 0.5], chosen=1),
        record(1, [0.7, 0.7]),  # tied rewards: no preference pair
        record(2, [0.0, 0.0], rewarded=False),  # mbr: no rewards at all
        record(3, [0.3, 0.6, 0.1], chosen=0),  # an MBR-style choice that is not the argmax
    ]
    counts = export(records, tmp_path / "best", "best")
    assert counts == {"distill": 4, "preferences": 2, "all_n": 3}
    distill = read_jsonl(tmp_path / "best" / "distill.jsonl")
    assert distill[0]["messages"] == [
        {"role": "user", "content": "q0"},
        {"role": "assistant", "content": "a0-1"},
    ]
    assert distill[2]["reward"] is None
    pairs = read_jsonl(tmp_path / "best" / "preferences.jsonl")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a0-1", "a0-0"), ("a3-1", "a3-2")]
    all_n = read_jsonl(tmp_path / "best" / "all_n.jsonl")
    assert [len(row["responses"]) for row in all_n] == [3, 2, 3]
    assert all_n[0]["responses"][1] == {
        "text": "a0-1",
        "token_ids": [1],
        "logprobs": [-0.5],
        "reward": 0.9,
    }
    export(records, tmp_path / "choice", "choice")
    pairs = read_jsonl(tmp_path / "choice" / "preferences.jsonl")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a0-1", "a0-0"), ("a3-0", "a3-2")]


def test_l7_malformed_and_non_finite_records_are_skipped_and_counted(tmp_path: Path) -> None:
    from collections import Counter

    bad = [
        {"id": 1},  # the repro of L7: parses, but is no record
        [1, 2],
        {**record(1, [0.1, 0.9]), "chosen_index": 5},
        {**record(2, [0.1, 0.9]), "chosen_index": True},
        {**record(3, [0.1, 0.9]), "candidates": []},
        record(4, [0.2, "0.9"]),  # type: ignore[list-item]
        record(5, [0.2, math.nan, 0.9]),
        record(6, [math.inf, 0.1]),
    ]
    good = [record(0, [0.2, 0.9]), record(7, [math.nan, math.nan], rewarded=False)]
    skipped: Counter[str] = Counter()
    counts = export([good[0], *bad, good[1]], tmp_path, "best", skipped)
    assert counts == {"distill": 2, "preferences": 1, "all_n": 1}
    assert skipped == {"malformed": 6, "non_finite": 2}
    rows = read_jsonl(tmp_path / "distill.jsonl")
    assert [r["id"] for r in rows] == ["r0", "r7"] and rows[1]["reward"] is None


def test_l7_a_failed_export_leaves_the_previous_training_sets(tmp_path: Path) -> None:
    export([record(0, [0.2, 0.9])], tmp_path, "best")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}

    def records() -> Any:
        yield record(1, [0.3, 0.4])
        raise OSError("the disk went away")

    with pytest.raises(OSError):
        export(records(), tmp_path, "best")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before  # no temp files left


def test_l7_a_symlink_at_an_output_path_is_replaced_not_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "distill.jsonl").symlink_to(precious)
    export([record(0, [0.2, 0.9])], out, "best")
    assert precious.read_text() == "keep me\n"
    assert not (out / "distill.jsonl").is_symlink()
    assert [r["id"] for r in read_jsonl(out / "distill.jsonl")] == ["r0"]


def test_l7_export_command_reports_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from tools.export import main

    records = tmp_path / "rec"
    records.mkdir()
    lines = [json.dumps(record(0, [0.2, 0.9])), '{"id": 1}', json.dumps(record(2, [math.nan, 1.0]))]
    (records / "records-x.jsonl").write_text("\n".join(lines) + "\n")
    args = argparse.Namespace(records=str(records), out=str(tmp_path / "train"), pairs="best")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "read 3 records from 1 shards, skipped 1 malformed records" in out
    assert "skipped 1 records with non-finite rewards" in out
