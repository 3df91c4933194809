"""The fuzzing shared by the in-process HTTP fuzz (tests/unit/test_fuzz_http.py, the fake
runtime, full size) and the smaller one against the real engine (tests/e2e/test_fuzz.py):
the server's tight limits, schemathesis over the server's own OpenAPI document, and valid
``search`` objects for every algorithm of the registry.

The server requires an API key, which every fuzzed request sends. Schema-valid requests
that the server still refuses (over a limit, an unknown search algorithm in the free-form
``search`` object) are expected: that check is excluded.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from search.registry import STRATEGIES

API_KEY = "fuzz-key-1"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# The limits both fuzzed servers run with (max_tokens <= 4, N <= 2), so the requests the
# fuzzer makes valid stay cheap on a CPU; the limits themselves are part of what is
# exercised. As Settings fields; ``serve_flags`` spells them for the command line.
LIMITS: dict[str, Any] = {
    "max_tokens_limit": 4,
    "default_max_tokens": 4,
    "max_n": 2,
    "default_n": 2,
    "max_live_candidates": 4,
    "request_timeout_s": 30,
}


def serve_flags() -> list[str]:
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in LIMITS.items()]
    return [*flags, "--api-key", API_KEY]


small = st.integers(1, 2)
beta = st.floats(0.01, 2.0)
# Per algorithm, a few of its options with small, valid values. chrf is the utility that
# needs no model; the DPO partial score needs scorers this server has not.
OPTIONS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "bon": {},
    "none": {},
    "rbon_kl": {"beta": beta, "logprob": st.sampled_from(["sum", "mean"])},
    "rbon_wd": {"beta": beta, "utility": st.just("chrf")},
    "srbon": {
        "variant": st.sampled_from(["kl", "wd", "length"]),
        "beta": beta,
        "utility": st.just("chrf"),
        "seed": st.integers(0, 1000),
    },
    "mbr": {"utility": st.just("chrf")},
    "majority": {
        "answer_regex": st.sampled_from([r"(\d+)", r"answer: (\w+)", r"^(\w+)"]),
        "weighting": st.sampled_from(["none", "reward"]),
    },
    "treebon": {
        "layers": small,
        "branching": small,
        "partial_score": st.sampled_from(["auto", "reward"]),
    },
    "spec_rejection": {
        "n_initial": st.integers(1, 4),
        "decision_tokens": small,
        "alpha": st.floats(0.05, 0.9),
    },
    "darwin": {
        "mutations": small,
        "cycles": small,
        "top_k": small,
        "replacement_period": small,
        "rewrite_tokens": st.integers(16, 32),
        "look_ahead": st.integers(0, 2),
        "replacement": st.booleans(),
        "seed": st.integers(0, 1000),
    },
    **{
        name: {
            "max_step_tokens": small,
            "max_steps": st.integers(1, 3),
            "step_delimiter": st.sampled_from(["\n\n", "\n", ". "]),
            "aggregation": st.sampled_from(["last", "min", "prod", "mean"]),
            "answer_regex": st.sampled_from([r"(\d+)", r"^(\w+)"]),
            **extra,
        }
        for name, extra in (
            ("beam_search", {"beam_width": small, "filter_duplicates": st.booleans()}),
            ("dvts", {"beam_width": small}),
            ("particle_filtering", {"resample_temperature": st.floats(0.1, 2.0)}),
        )
    },
    "adaptive_bon": {
        "round_size": small,
        "min_gain": st.floats(0.0, 0.1),
        "estimator": st.sampled_from(["normal", "gpd", "max"]),
    },
}
SERVING: dict[str, st.SearchStrategy[Any]] = {
    "return_candidates": st.booleans(),
    "timeout_s": st.sampled_from([20.0, 30]),
    "on_timeout": st.sampled_from(["best", "error"]),
    "stream_committed": st.booleans(),
}


@st.composite
def search_requests(draw: st.DrawFn, algorithm: str) -> dict[str, Any]:
    # "none" is one response: its n is 1.
    n = 1 if algorithm == "none" else draw(small)
    search: dict[str, Any] = {"algorithm": algorithm, "n": n}
    for source in (OPTIONS[algorithm], SERVING):
        for key, values in source.items():
            if draw(st.booleans()):
                search[key] = draw(values)
    max_tokens = draw(st.integers(1, 4))
    # Options that depend on each other: n_initial >= n; branching and beam_width divide
    # n; a layer needs a token.
    if "n_initial" in search:
        search["n_initial"] = max(search["n_initial"], search["n"])
    if search["n"] % search.get("branching", 1):
        search["branching"] = 1
    if algorithm in ("beam_search", "dvts") and search["n"] % search.get("beam_width", 4):
        search["beam_width"] = 1  # the default 4 divides no n of 1 or 2
    if algorithm == "treebon":
        layers = search.get("layers", STRATEGIES["treebon"].model_fields["layers"].default)
        search["layers"] = min(layers, max_tokens)
    body: dict[str, Any] = {
        "messages": [
            {
                "role": "user",
                "content": draw(st.sampled_from(["What is 2+2?", "Say hi.", "Name a color."])),
            }
        ],
        "max_tokens": max_tokens,
        "n": draw(st.integers(1, search["n"])),
        "temperature": draw(st.sampled_from([0.7, 1.0, 1.3])),
        "stream": draw(st.booleans()),
        "search": search,
    }
    return body


def fuzz_settings(examples: int) -> settings:
    """Hypothesis's settings for both fuzzers: ``examples`` cases, no deadline or example
    database, and the same examples on every run (CI is reproducible; widen ``examples``
    to explore)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def fuzz_schema(api: Any, mode: schemathesis.GenerationMode, examples: int, **call: Any) -> None:
    """Positive mode: schema-valid requests; negative mode: requests that break the schema
    (which must come back as documented 4xx errors, never 5xx). ``call``: how a case
    reaches the server (``base_url``, or an in-process ``session``)."""
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/completions",
        "/v1/models",
        "/ready",
    }
    if mode is schemathesis.GenerationMode.NEGATIVE:
        # Only a request body can be made invalid; GET routes without parameters cannot.
        operations = [op for op in operations if len(op.body)]
    sent = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @fuzz_settings(examples)
        def check(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            # The server cuts every search at --request-timeout-s 30 (then 504, documented);
            # the client waits longer, so a loaded machine's slow 200 is not a failure.
            case.call_and_validate(
                headers=AUTH, excluded_checks=[positive_data_acceptance], timeout=60, **call
            )

        check()
    assert sent >= examples  # hypothesis may stop early on small input spaces


def fuzz_searches(api: Any, algorithm: str, examples: int, **call: Any) -> None:
    """Valid ``search`` objects for ``algorithm``: each answered as the schema says, 200
    (plain or a stream ending in [DONE] with the report) or, for DARWIN, whose 5 beams per
    mutation exceed --max-n 2, a 400 naming the field."""
    chat = next(
        op.ok()
        for op in api.get_all_operations()
        if op.ok().path == "/v1/chat/completions" and op.ok().method.upper() == "POST"
    )
    outcomes: list[tuple[int, str]] = []

    @given(body=search_requests(algorithm))
    @fuzz_settings(examples)
    def check(body: dict[str, Any]) -> None:
        case = chat.Case(body=body, media_type="application/json")
        reply = case.call_and_validate(
            headers=AUTH, excluded_checks=[positive_data_acceptance], timeout=60, **call
        )
        assert reply.status_code < 500, (body, reply.text[:500])
        if reply.status_code != 200:
            error = reply.json()["error"]
            assert error["code"] == reply.status_code
            outcomes.append((reply.status_code, f"{error['param']}: {error['message'][:120]}"))
        elif body["stream"]:
            events = [
                line[len("data: ") :]
                for line in reply.text.splitlines()
                if line.startswith("data: ")
            ]
            assert events[-1] == "[DONE]", events[-3:]
            chunks = [json.loads(e) for e in events[:-1]]
            assert all(c.get("object") == "chat.completion.chunk" for c in chunks), chunks
            # No include_usage: every chunk has a choice; the last, a finish chunk, the report.
            assert all(c["choices"] for c in chunks), chunks
            assert "search" in chunks[-1], chunks[-1]
            outcomes.append((200, "stream"))
        else:
            data = reply.json()
            assert data["object"] == "chat.completion"
            assert len(data["choices"]) == body["n"]
            assert data["usage"]["completion_tokens"] <= body["n"] * body["max_tokens"]
            assert data["search"]["algorithm"] == algorithm
            outcomes.append((200, ""))

    check()
    print(f"{algorithm}: {sorted(outcomes)}")
    assert len(outcomes) >= examples // 2
    if algorithm == "darwin":
        assert all(status == 400 for status, _ in outcomes), outcomes
    else:
        assert all(status == 200 for status, _ in outcomes), outcomes
