"""Logs (server.logs): with ``--log-format json`` every line is a JSON object; every
search request ends with exactly one ``request finished`` line with its ids, counts and
latency, in either format; prompt and answer text never reach the log."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from search.fakes import TableReward
from server.logs import REQUESTS_LOGGER, Event, JsonFormatter, formatter_for, uvicorn_log_config
from server.request_id import RequestIdFilter

URL = "/v1/chat/completions"
# Text that must never be logged: the prompt and every candidate answer.
SECRET_PROMPT = "my card number is 4111-qqzx"
ANSWERS = ["alpha-qqzx", "bravo-qqzx-bravo", "charlie-qqzx-charlie-x"]
REWARDS = {ANSWERS[0]: 0.1, ANSWERS[1]: 0.9, ANSWERS[2]: 0.5}


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": SECRET_PROMPT}], **kw}


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["logger"] == REQUESTS_LOGGER]


def capture(log_format: str) -> Iterator[Captured]:
    """Every logger's records at DEBUG, formatted as the server formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def json_log() -> Iterator[Captured]:
    yield from capture("json")


@pytest.fixture
def text_log() -> Iterator[Captured]:
    yield from capture("text")


@pytest.fixture
def runtime(runtime_of: Any, script: Any) -> Any:
    return runtime_of(script(ANSWERS), TableReward(REWARDS))


async def test_one_json_line_per_request_with_its_fields(
    serve_app: Any, runtime: Any, json_log: Captured
) -> None:
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(search={"algorithm": "bon", "n": 3}))
    assert r.status_code == 200
    (line,) = json_log.requests()
    latency = line.pop("latency_s")
    assert isinstance(latency, float) and 0 <= latency < 30
    time_ = line.pop("time")
    assert time_.endswith("+00:00") and "T" in time_
    assert line == {
        "level": "INFO",
        "logger": REQUESTS_LOGGER,
        "message": "request finished",
        "request_id": r.headers["x-request-id"],
        "route": URL,
        "status": 200,
        "algorithm": "bon",
        "stream": False,
        "prompt_tokens": len(f"<user>{SECRET_PROMPT}<assistant>"),
        "generated_tokens": sum(len(a) for a in ANSWERS),
        "engine_calls": 1,
        "reward_calls": 1,
        "chosen_reward": 0.9,
        "deadline_hit": False,
        "budget_hit": False,
        "response_id": r.json()["id"],
    }


async def test_every_line_is_json_and_no_text_is_logged(
    serve_app: Any, runtime: Any, json_log: Captured, parse_sse: Any
) -> None:
    async with serve_app(runtime) as client:
        plain = await client.post(URL, json=body(search={"algorithm": "bon", "n": 3}))
        streamed = await client.post(
            URL, json=body(stream=True, search={"algorithm": "bon", "n": 3})
        )
        refused = await client.post(URL, json=body(search={"algorithm": "bon", "n": 1000}))
    assert (plain.status_code, streamed.status_code, refused.status_code) == (200, 200, 400)
    deltas = [c["choices"][0]["delta"] for c in parse_sse(streamed.text)[:-1] if c["choices"]]
    streamed_answer = "".join(d.get("content", "") for d in deltas)
    assert ANSWERS[1] in plain.text and streamed_answer == ANSWERS[1]  # the text was served...
    assert "qqzx" not in json_log.text  # ...and never logged, at any level
    lines = json_log.lines()  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    requests = json_log.requests()
    assert [(r["status"], r["stream"]) for r in requests] == [
        (200, False),
        (200, True),
        (400, False),
    ]
    ids = [r.headers["x-request-id"] for r in (plain, streamed, refused)]
    assert [r["request_id"] for r in requests] == ids
    stream_line = requests[1]
    assert stream_line["generated_tokens"] == sum(len(a) for a in ANSWERS)
    assert stream_line["response_id"].startswith("chatcmpl-")
    # Refused before it was prepared: no counts, and none made up.
    assert "prompt_tokens" not in requests[2] and "generated_tokens" not in requests[2]
    assert requests[2]["algorithm"] == "bon"


async def test_a_text_request_line(serve_app: Any, runtime: Any, text_log: Captured) -> None:
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(search={"algorithm": "bon", "n": 3}))
    (line,) = [x for x in text_log.text.splitlines() if REQUESTS_LOGGER in x]
    rid = r.headers["x-request-id"]
    assert f" INFO {REQUESTS_LOGGER} [{rid}]: request finished: route={URL} status=200 " in line
    assert " algorithm=bon stream=false prompt_tokens=" in line
    assert " chosen_reward=0.9 deadline_hit=false " in line
    assert "qqzx" not in text_log.text


def record(msg: Any, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("x.y", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_json_formatter_keeps_its_own_keys_and_exceptions() -> None:
    event = record(Event("e", {"level": "forged", "message": "forged", "n": 2}))
    out = json.loads(JsonFormatter().format(event))
    assert (out["level"], out["message"], out["n"], out["logger"]) == ("WARNING", "e", 2, "x.y")
    assert "request_id" not in out  # outside a request
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed %s", "x", exc_info=sys.exc_info())
    out = json.loads(JsonFormatter().format(failed))
    assert out["message"] == "failed x"
    assert out["exception"].startswith("Traceback") and "ValueError: boom" in out["exception"]
    assert "\n" not in JsonFormatter().format(failed)  # one line, whatever the traceback


def test_event_text_skips_unknowns() -> None:
    assert str(Event("done", {"a": 1, "b": None, "c": True, "d": 0.5})) == "done: a=1 c=true d=0.5"


def test_uvicorn_logs_reach_the_root_handler_in_json() -> None:
    assert uvicorn_log_config("json") is None
    text = uvicorn_log_config("text")
    assert text is not None and "uvicorn.access" in text["loggers"]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "ALIGNSERVE_"))}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_setup_logging_json_for_the_process_and_for_vllm() -> None:
    """In a fresh process, as ``alignserve serve --log-format json`` starts: the root
    handler writes JSON, and the file vLLM's processes configure their loggers from
    makes vLLM's lines JSON too (applied here as vLLM applies it, with dictConfig)."""
    done = run_python(
        "import json, logging, logging.config, os\n"
        "from server.logs import setup_logging\n"
        "setup_logging('info', 'json')\n"
        "logging.getLogger('server.x').info('hello %s', 'there')\n"
        "logging.getLogger('server.x').debug('hidden')\n"
        "with open(os.environ['VLLM_LOGGING_CONFIG_PATH']) as f:\n"
        "    logging.config.dictConfig(json.load(f))\n"
        "logging.getLogger('vllm.engine').info('engine up')\n"
        "logging.getLogger('server.x').info('still here')\n"
    )
    assert done.returncode == 0, done.stderr
    ours = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["logger"], x["message"], x["level"]) for x in ours] == [
        ("server.x", "hello there", "INFO"),
        ("server.x", "still here", "INFO"),  # vLLM's config left the other loggers alone
    ]
    (vllm,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (vllm["logger"], vllm["message"]) == ("vllm.engine", "engine up")


def test_setup_logging_text_is_unchanged() -> None:
    done = run_python(
        "import logging, os\n"
        "from server.logs import setup_logging\n"
        "setup_logging('info')\n"
        "logging.getLogger('server.x').info('hello')\n"
        "print('VLLM_LOGGING_CONFIG_PATH' in os.environ)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.rstrip().endswith(" INFO server.x [-]: hello")
    assert done.stdout.strip() == "False"


async def test_a_several_prompt_completions_line_counts_every_prompt(
    serve_app: Any, json_log: Captured
) -> None:
    # Regression: the line counted only the first prompt's tokens (clients review, 2026-12-07).
    async with serve_app() as client:
        r = await client.post("/v1/completions", json={"prompt": ["a", "bb b", "ccc c c"]})
    assert r.status_code == 200, r.text
    reports = r.json()["search"]
    (line,) = json_log.requests()
    assert line["prompt_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert line["generated_tokens"] == sum(s["generated_tokens"] for s in reports)
    assert line["engine_calls"] == sum(s["engine_calls"] for s in reports)
    assert len(reports) == 3 and line["prompt_tokens"] > 3 * len("a")


async def test_fields_are_logged_as_ignored_only_when_the_request_is_not_refused_for_them(
    serve_app: Any, runtime: Any, json_log: Captured
) -> None:
    # Regression: "ignoring unknown request fields" was logged, then the request refused
    # for that very field (clients review, 2026-12-07).
    async with serve_app(runtime) as client:
        bon = {"algorithm": "bon", "n": 3}
        refused = await client.post(URL, json=body(search=bon, logit_bias={"5": 1}, min_tokens=2))
        served = await client.post(URL, json=body(search=bon, min_tokens=2))
    assert (refused.status_code, served.status_code) == (400, 200)
    ignored = [line for line in json_log.lines() if "ignoring unknown" in line["message"]]
    assert [line["request_id"] for line in ignored] == [served.headers["x-request-id"]]
    assert ignored[0]["message"] == "ignoring unknown request fields: 'min_tokens'"
