"""vLLM's tokenizer routes over the fake runtime: /tokenize (a prompt, a conversation),
/detokenize and /tokenizer_info in vLLM's shapes, and their bounds (the API key, the
model name, the request limits, the vocabulary, refused vLLM fields).

The CharTokenizer makes one token of each character (ids are code points) and renders a
conversation as ``<role>content...<assistant>``.
"""

from __future__ import annotations

from typing import Any

import pytest

from search.fakes import CharTokenizer
from server.settings import Settings
from tests.unit.conftest import make_runtime


class ListedTokenizer(CharTokenizer):
    """The fakes' tokenizer with a vocabulary (code points below 0x110000)."""

    def vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(0x110000)}


def runtime() -> Any:
    rt = make_runtime()
    rt.tokenizer = ListedTokenizer()
    return rt


async def test_tokenize_a_prompt(serve_app: Any) -> None:
    async with serve_app(runtime()) as client:
        r = await client.post("/tokenize", json={"model": "m", "prompt": "hi!"})
        strs = await client.post("/tokenize", json={"prompt": "hi", "return_token_strs": True})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "count": 3,
        "max_model_len": 3000,
        "tokens": [104, 105, 33],
        "token_strs": None,
    }
    assert strs.json()["token_strs"] == ["h", "i"]


async def test_tokenize_a_conversation_as_a_chat_request_renders_it(serve_app: Any) -> None:
    messages = [{"role": "user", "content": "hi"}]
    async with serve_app(runtime()) as client:
        r = await client.post("/tokenize", json={"messages": messages})
        chat = await client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 4}
        )
    ids = CharTokenizer().render_chat(messages)
    assert r.json()["tokens"] == ids
    assert r.json()["count"] == chat.json()["usage"]["prompt_tokens"] == len(ids)


async def test_detokenize(serve_app: Any) -> None:
    async with serve_app(runtime()) as client:
        r = await client.post("/detokenize", json={"model": "m", "tokens": [104, 105]})
        empty = await client.post("/detokenize", json={"tokens": []})
    assert r.status_code == 200, r.text
    assert r.json() == {"prompt": "hi"}
    assert empty.json() == {"prompt": ""}


async def test_tokenizer_info_names_the_special_tokens(serve_app: Any) -> None:
    async with serve_app(runtime()) as client:
        r = await client.get("/tokenizer_info")
    assert r.status_code == 200
    info = r.json()
    # What lm-eval's remote tokenizer probe looks for.
    assert "eos_token" in info and info["tokenizer_class"] == "ListedTokenizer"


@pytest.mark.parametrize(
    ("path", "request_body", "status", "param"),
    [
        ("/tokenize", {"model": "other", "prompt": "hi"}, 404, "model"),
        ("/detokenize", {"model": "other", "tokens": [1]}, 404, "model"),
        ("/tokenize", {}, 400, "prompt"),
        (
            "/tokenize",
            {"prompt": "hi", "messages": [{"role": "user", "content": "x"}]},
            400,
            "messages",
        ),
        ("/tokenize", {"prompt": 5}, 400, "prompt"),
        ("/tokenize", {"prompt": "hi", "add_special_tokens": 1}, 400, "add_special_tokens"),
        ("/tokenize", {"messages": []}, 400, "messages"),
        (
            "/tokenize",
            {"messages": [{"role": "user"}], "tools": [{"type": "function"}]},
            400,
            "tools",
        ),
        (
            "/tokenize",
            {"messages": [{"role": "user"}], "chat_template": "{{ x }}"},
            400,
            "chat_template",
        ),
        (
            "/tokenize",
            {"messages": [{"role": "user"}], "continue_final_message": True},
            400,
            "continue_final_message",
        ),
        ("/tokenize", {"prompt": "x" * 101}, 400, "prompt"),  # --max-request-chars 100
        ("/tokenize", {"messages": [{"role": "user", "content": "x"}] * 3}, 400, "messages"),
        ("/detokenize", {"tokens": [0x110000]}, 400, "tokens"),  # outside the vocabulary
        ("/detokenize", {"tokens": [-1]}, 400, "tokens.0"),
        ("/detokenize", {"tokens": [97] * 3001}, 400, "tokens"),  # over the context
        ("/detokenize", {"tokens": "hi"}, 400, "tokens"),
    ],
)
async def test_refusals_name_the_field(
    serve_app: Any, path: str, request_body: dict[str, Any], status: int, param: str
) -> None:
    settings = Settings(max_request_chars=100, max_messages=2)
    async with serve_app(runtime(), settings) as client:
        r = await client.post(path, json=request_body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


async def test_a_lone_surrogate_is_refused(serve_app: Any) -> None:
    async with serve_app(runtime()) as client:
        r = await client.post(
            "/tokenize",
            content=b'{"prompt": "a\\ud800"}',
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize(
    ("method", "path", "request_body"),
    [
        ("POST", "/tokenize", {"prompt": "hi"}),
        ("POST", "/detokenize", {"tokens": [104]}),
        ("GET", "/tokenizer_info", None),
    ],
)
async def test_the_routes_need_the_key_when_the_server_has_keys(
    serve_app: Any, method: str, path: str, request_body: dict[str, Any] | None
) -> None:
    async with serve_app(runtime(), Settings(api_key=["k"])) as client:
        refused = await client.request(method, path, json=request_body)
        allowed = await client.request(
            method, path, json=request_body, headers={"Authorization": "Bearer k"}
        )
    assert refused.status_code == 401
    assert allowed.status_code == 200, allowed.text


async def test_the_routes_are_in_the_openapi_document(serve_app: Any) -> None:
    async with serve_app(runtime()) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/tokenize", "/detokenize", "/tokenizer_info"} <= set(paths)
    assert "422" not in paths["/tokenize"]["post"]["responses"]
