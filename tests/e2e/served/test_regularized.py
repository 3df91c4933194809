"""The regularised searches' defaults and SRBoN-WD through /v1/chat/completions on the
embedded default, with the official openai client: the answer is the rule's choice on the
reported rewards and logprobs, and SRBoN-WD's p is the optimum of its objective."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import openai
import ot
import pytest
from scipy.optimize import linprog

from search.rbon_kl import RegularizedBoNKL
from tests.e2e.served.test_algorithms import argmax, ask

pytestmark = pytest.mark.e2e


def per_token(cands: list[dict[str, Any]]) -> list[float]:
    return [c["logprob"] / max(c["tokens"], 1) for c in cands]


def softmax(values: list[float]) -> np.ndarray:
    x = np.array(values)
    w = np.exp(x - x.max())
    return w / w.sum()


def test_rbon_kl_defaults_weigh_the_per_token_logprob(client: openai.OpenAI) -> None:
    beta = RegularizedBoNKL.model_fields["beta"].default
    _, report, cands, _ = ask(client, {"algorithm": "rbon_kl", "n": 4}, 6)
    assert report["details"]["logprob"] == "mean"
    objective = [c["reward"] + beta * lp for c, lp in zip(cands, per_token(cands), strict=True)]
    assert report["details"]["objective"] == pytest.approx(objective)
    assert report["chosen_index"] == argmax(objective)


def test_srbon_wd_draws_from_the_transport_optimum(client: openai.OpenAI) -> None:
    search = {"algorithm": "srbon", "n": 4, "variant": "wd", "seed": 7}
    _, report, cands, _ = ask(client, search, 7)
    details = report["details"]
    assert details["utility"] == "embedding" and details["logprob"] == "mean"
    reference = softmax(per_token(cands))
    assert details["reference"] == pytest.approx(reference)
    # p is pi_ref moved along the reported plan, and the answer is p's inverse CDF at the draw.
    moved = np.zeros(4)
    for i, j in enumerate(details["transport"]):
        moved[j] += reference[i]
    p = np.array(details["probabilities"])
    assert p == pytest.approx(moved)
    assert report["chosen_index"] == int(np.searchsorted(np.cumsum(p), details["draw"], "right"))


def test_srbon_wd_chrf_is_the_optimum_of_its_objective(client: openai.OpenAI) -> None:
    from sacrebleu.metrics import CHRF

    beta = 0.3
    search = {"algorithm": "srbon", "n": 4, "variant": "wd", "utility": "chrf", "beta": beta}
    _, report, cands, _ = ask(client, search, 8)
    texts = [c["text"] for c in cands]
    rewards = np.array([c["reward"] for c in cands])
    chrf = CHRF()
    # U[h][r] = chrF(answer h against reference r); moving mass from reference i to answer j
    # costs 1 - U[j][i].
    utility = np.array([[chrf.sentence_score(h, [r]).score / 100 for r in texts] for h in texts])
    cost = 1.0 - utility.T
    reference = softmax(per_token(cands))
    p = np.array(report["details"]["probabilities"])
    value = p @ rewards - beta * ot.emd2(reference, p / p.sum(), cost)
    # The whole problem as one LP over (p, T): T 1 = pi_ref, T^T 1 = p, p, T >= 0.
    n = len(texts)
    c = -np.concatenate([rewards, -beta * cost.ravel()])
    a_eq = np.vstack(
        [
            np.hstack([np.zeros((n, n)), np.kron(np.eye(n), np.ones(n))]),
            np.hstack([-np.eye(n), np.kron(np.ones(n), np.eye(n))]),
        ]
    )
    b_eq = np.concatenate([reference, np.zeros(n)])
    optimum = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert optimum.status == 0
    assert math.isclose(value, -optimum.fun, abs_tol=1e-6)
    assert p[report["chosen_index"]] > 0
