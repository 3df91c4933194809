from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from search.engines.tokenizer import HFChatTokenizer


@pytest.fixture(scope="session")
async def engine(model_path: str) -> AsyncIterator[object]:
    from search.engines.vllm_local import EngineConfig, VLLMGenerator

    generator = VLLMGenerator.start(EngineConfig(model=model_path, max_model_len=4096))
    yield generator
    generator.shutdown()


@pytest.fixture(scope="session")
def tokenizer(model_path: str) -> HFChatTokenizer:
    return HFChatTokenizer.load(model_path)
