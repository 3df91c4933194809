"""Fixtures of the integration tests (the real engine and model). The engines several
files share are in shared/conftest.py."""

from __future__ import annotations

import pytest

from engines.tokenizer import HFChatTokenizer


@pytest.fixture(scope="session")
def tokenizer(model_path: str) -> HFChatTokenizer:
    return HFChatTokenizer.load(model_path)
