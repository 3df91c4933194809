"""Rewards chosen per request on the default server (`make serve`), with the official
openai client: the constraints verifier as the search's reward (bon and tree searches),
judge + constraints combined, a rubric, and the 400s. Every verifier score the server
reports is recomputed here from the candidate's text."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from rewards.constraints import ConstraintsReward, parse_constraints
from tests.e2e.conftest import MODEL, question
from tests.e2e.served.test_algorithms import ask

pytestmark = pytest.mark.e2e

# Checks a 135M model meets by chance on some samples and misses on others.
CHECKS = [{"type": "no_commas"}, {"type": "word_count", "max": 12}]


def verifier_scores(cands: list[dict[str, Any]]) -> list[float]:
    checks = ConstraintsReward(parse_constraints(CHECKS))
    return [checks.score_text(c["text"], False) for c in cands]


def test_bon_16_on_constraints_meets_them_when_a_candidate_does(client: openai.OpenAI) -> None:
    search = {"algorithm": "bon", "n": 16, "reward": "constraints", "constraints": CHECKS}
    _, report, cands, chosen = ask(client, search, 3)
    scores = verifier_scores(cands)
    assert [c["reward"] for c in cands] == pytest.approx(scores)
    assert [c["constraints"] for c in report["reward"]["components"]] == pytest.approx(scores)
    assert report["constraints"]["all_met"] == [s == 1.0 for s in scores]
    assert chosen["reward"] == max(scores)
    if any(report["constraints"]["all_met"]):
        assert report["constraints"]["all_met"][report["chosen_index"]]


@pytest.mark.parametrize("algorithm", ["treebon", "spec_rejection"])
def test_tree_searches_prune_on_the_verifier(client: openai.OpenAI, algorithm: str) -> None:
    search = {"algorithm": algorithm, "n": 4, "reward": "constraints", "constraints": CHECKS}
    _, _, cands, chosen = ask(client, search, 5)
    # Finished candidates are scored as complete texts, so their reward is the verifier's.
    finished = [c for c in cands if c["finish_reason"] == "stop"]
    assert [c["reward"] for c in finished] == pytest.approx(verifier_scores(finished))
    assert chosen["reward"] == max(c["reward"] for c in cands)


def test_judge_plus_constraints_reports_both(client: openai.OpenAI) -> None:
    search = {
        "algorithm": "bon",
        "n": 4,
        "reward": {"judge": 1.0, "constraints": 2.0},
        "constraints": CHECKS,
    }
    _, report, cands, chosen = ask(client, search, 8)
    components = report["reward"]["components"]
    assert report["reward"]["weights"] == {"judge": 1.0, "constraints": 2.0}
    assert [c["constraints"] for c in components] == pytest.approx(verifier_scores(cands))
    assert all(0.0 <= c["judge"] <= 1.0 for c in components)
    totals = [c["judge"] + 2.0 * c["constraints"] for c in components]
    assert [c["reward"] for c in cands] == pytest.approx(totals)
    assert chosen["reward"] == pytest.approx(max(totals))


def test_a_rubric_changes_the_judge_s_scores(client: openai.OpenAI) -> None:
    base = {"algorithm": "bon", "n": 4, "reward": "judge"}
    _, _, plain, _ = ask(client, base, 9)
    rubric = "Only the answer's brevity matters: the shorter, the better."
    _, _, judged, _ = ask(client, {**base, "rubric": rubric}, 9)
    assert [c["text"] for c in judged] == [c["text"] for c in plain]  # the same seeded samples
    assert [c["reward"] for c in judged] != [c["reward"] for c in plain]
    assert all(0.0 <= c["reward"] <= 1.0 for c in judged)


@pytest.mark.parametrize(
    ("search", "param"),
    [
        ({"reward": "gpt-judge"}, "search.reward"),
        ({"reward": {"judge": -1}}, "search.reward"),
        ({"reward": "constraints", "rubric": "be brief"}, "search.rubric"),
        ({"reward": "constraints"}, "search.constraints"),
        ({"reward": "constraints", "constraints": [{"type": "rhymes"}]}, "search.constraints[0]"),
    ],
)
def test_bad_reward_choices_are_400s(
    client: openai.OpenAI, search: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=question(0), max_tokens=8, extra_body={"search": search}
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["param"].startswith(param)
