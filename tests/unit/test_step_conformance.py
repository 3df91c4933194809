"""Conformance of the step searches with restatements of their reference loops, as
test_algorithms_darwin.py does for DARWIN: search-and-learn's beam search
(``src/sal/search/beam_search.py``) and DVTS (``diverse_verifier_tree_search.py``), and
its_hub's particle filtering (``its_hub/algorithms/particle_gibbs.py``), restated on text
below, run against the same scripted world as the searches: same kept beams, same
candidates and scores, same answers, over several seeds.

The world: what the model writes from a response so far is a fixed pseudo-random function
of (seed, that text, how many times that text was sampled before), a few steps ending in
"\\n\\n" and a last one without (the end-of-sequence token); a step is that text cut after
its first "\\n\\n", the last round takes all of it. Both sides draw a text's samples in the
same order (search-and-learn's active beams in order, each kept beam's copies together in
``(kept * repeats)[:n]`` order), so they see the same samples. The PRM's score of a step is
a pseudo-random function of the response up to that step, cut into its steps.

What the restatements leave out, because the searches leave it out on purpose (their
module docstrings): search-and-learn's ``lookahead`` (0 by default), DVTS's "boxed{" stop
and its candidates cut at a delimiter, its_hub's ``stop_token`` and its stop after
``max_steps`` + 1 steps (here a particle ends at the end-of-sequence token and the last
round runs it to the end, as search-and-learn's last iteration does), and the empty step
search-and-learn's PRM formatting scores after a trailing "\\n\\n"."""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from search.beam_search import BeamSearch
from search.dvts import DiverseVerifierTreeSearch
from search.fakes import CharTokenizer, TableReward, fake_context, stepped
from search.particle_filtering import ParticleFiltering
from search.types import Completion, SamplingConfig

P = "<user>hi<assistant>"
DELIMITER = "\n\n"
WORDS = ["two", "plus", "three", "is", "five", "so", "x", "=", "4", "then", "check"]


# -- the world both sides query ------------------------------------------------------------
def continuation(seed: int, text: str, draw: int) -> str:
    """What the model writes after ``text`` on its ``draw``-th sample there, to its end."""
    rng = random.Random(f"{seed}|{text}|{draw}")
    out = ""
    for _ in range(rng.randint(0, 3)):
        out += " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) + DELIMITER
    return out + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def step_score(seed: int, steps: Sequence[str]) -> float:
    """The PRM's score of the last of ``steps`` given those before it: it depends on where
    the steps are cut, as a PRM's does (a response as one step scores otherwise than as
    several)."""
    return round(random.Random(f"prm|{seed}|{'|'.join(steps)}").random(), 6)


def split(text: str) -> list[str]:
    pieces = [p + DELIMITER for p in text.split(DELIMITER)]
    pieces[-1] = pieces[-1].removesuffix(DELIMITER)
    return pieces if pieces[-1] else pieces[:-1]


def all_step_scores(seed: int, text: str) -> list[float]:
    """The PRM's score of every step of ``text`` (one forward pass of a Qwen-style PRM)."""
    steps = split(text)
    return [step_score(seed, steps[: j + 1]) for j in range(len(steps))]


def aggregate(scores: Sequence[float], how: str) -> float:
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    return scores[-1]


@dataclass
class World:
    """The reference side's sampler: the next step of ``text`` and whether it ended."""

    seed: int
    draws: Counter[str] = field(default_factory=Counter)

    def sample(self, text: str, to_end: bool) -> tuple[str, bool]:
        full = continuation(self.seed, text, self.draws[text])
        self.draws[text] += 1
        at = full.find(DELIMITER)
        if to_end or at == -1:
            return full, True
        return full[: at + len(DELIMITER)], False


@dataclass
class WorldGenerator:
    """The searches' engine over the same world (vLLM's cuts by ``stepped``)."""

    seed: int
    draws: Counter[str] = field(default_factory=Counter)
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        text = CharTokenizer().decode(prompt_ids).removeprefix(P)
        self.calls.append((text, n))
        outs = []
        for _ in range(n):
            outs.append(stepped(continuation(self.seed, text, self.draws[text]), params))
            self.draws[text] += 1
        return outs


@dataclass
class WorldPRM:
    seed: int
    bounds: tuple[float, float] | None = (0.0, 1.0)
    takes_token_ids = False

    async def score_last_steps(
        self, conversation: Any, steps: Sequence[Sequence[str]], **_: Any
    ) -> list[float]:
        return [step_score(self.seed, s) for s in steps]


def context(seed: int) -> tuple[Any, WorldGenerator]:
    gen = WorldGenerator(seed)
    sampling = SamplingConfig(max_tokens=100_000, seed=seed)
    return fake_context(gen, TableReward({}), sampling, prm=WorldPRM(seed)), gen


# -- search-and-learn's beam search, restated --------------------------------------------
def reference_beam_search(
    world: World, n: int, m: int, iterations: int, how: str
) -> tuple[list[list[str]], list[str], list[float], list[int]]:
    """``_beam_search`` with ``filter_duplicates`` and ``sort_completed`` false: per round
    the kept beams' texts, then the first n completed beams and their aggregated scores,
    and the number completed after each round."""
    beams = [{"text": "", "pruned": False, "completed": False} for _ in range(n)]
    active = beams
    completed: list[dict[str, Any]] = []
    kept_per_round: list[list[str]] = []
    done_after: list[int] = []
    for i in range(iterations):
        active = [b for b in active if not b["pruned"]]
        if len(active) != n:
            repeats = n // len(active) + 1
            active = [copy.deepcopy(b) for b in (active * repeats)[:n]]
        last = i == iterations - 1
        for b in active:
            step, ended = world.sample(b["text"], last)
            b["text"] += step
            if ended or step == "":
                b["completed"] = True
                completed.append(b)
            b["scores"] = all_step_scores(world.seed, b["text"])
        done_after.append(len(completed))
        active = [b for b in active if not b["completed"]]
        if not active:
            break
        first_of: dict[str, int] = {}
        for j, b in enumerate(active):
            first_of.setdefault(b["text"], j)
        active = [active[j] for j in first_of.values()]
        agg = [aggregate(b["scores"], how) for b in active]
        # np.argsort(agg)[-(n // m):] leaves equal scores to numpy's default sort, which is
        # not stable (a SIMD sort on x86): ties are broken to the earlier beam here, as the
        # search breaks them.
        top = np.argsort(-np.array(agg), kind="stable")[: n // m]
        for j, b in enumerate(active):
            b["pruned"] = j not in top
        kept_per_round.append([b["text"] for b in active if not b["pruned"]])
    chosen = completed[:n]
    scores = [aggregate(b["scores"], how) for b in chosen]
    return kept_per_round, [b["text"] for b in chosen], scores, done_after


# Seeds whose runs prune, refill fewer than N / M kept beams, complete more than N beams in
# one round (so the order of the copies decides the candidates) and reach the last round.
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("n", "m", "how"), [(4, 2, "last"), (8, 2, "min"), (6, 3, "prod")])
async def test_beam_search_matches_search_and_learn(seed: int, n: int, m: int, how: str) -> None:
    iterations = 4
    kept, texts, scores, _ = reference_beam_search(World(seed), n, m, iterations, how)
    ctx, gen = context(seed)
    search = BeamSearch(n=n, beam_width=m, max_steps=iterations, aggregation=how)  # type: ignore[arg-type]
    result = await search.run(ctx)
    assert [c.text for c in result.candidates] == texts
    assert [c.reward for c in result.candidates] == pytest.approx(scores)
    # The kept beams, round by round, are the texts each round's requests continue.
    continued = list(dict.fromkeys(text for text, _ in gen.calls))
    assert continued == ["", *[t for round_kept in kept for t in round_kept]][: len(continued)]
    assert len(continued) == 1 + sum(len(k) for k in kept[: len(result.details["rounds"]) - 1])
    # The answer: search-and-learn's best-of-n over its candidates (the first best).
    assert result.best.text == texts[scores.index(max(scores))]


def test_the_beam_search_worlds_exercise_what_they_claim() -> None:
    # Over the seeds and shapes above: runs that reach the last round, that keep fewer than
    # N / M beams, and that pass N completed beams within one round (where the order of
    # the copies decides which are the first N).
    reached_last = fewer_kept = passed_n = 0
    for seed in range(8):
        for n, m in [(4, 2), (8, 2), (6, 3)]:
            kept, _, _, done_after = reference_beam_search(World(seed), n, m, 4, "last")
            reached_last += len(done_after) == 4
            fewer_kept += any(len(k) < n // m for k in kept)
            passed_n += any(a < n < b for a, b in itertools.pairwise([0, *done_after]))
    assert reached_last and fewer_kept and passed_n


# -- search-and-learn's DVTS, restated -----------------------------------------------------
def reference_dvts(world: World, n: int, m: int, iterations: int, how: str) -> list[list[str]]:
    """``_dvts`` with ``lookahead`` 0 and no "boxed{" stop: per subtree, its last round's
    M samples, each with whether it ended the response."""
    beams = [{"text": "", "pruned": False, "last": []} for _ in range(n // m)]
    for i in range(iterations):
        live = [b for b in beams if not b["pruned"]]
        if not live:
            break
        samples = [[world.sample(b["text"], i == iterations - 1) for _ in range(m)] for b in live]
        for b, nexts in zip(live, samples, strict=True):
            agg = [aggregate(all_step_scores(world.seed, b["text"] + t), how) for t, _ in nexts]
            best = agg.index(max(agg))
            b["last"] = [(b["text"] + t, ended) for t, ended in nexts]
            b["text"] += nexts[best][0]
            if nexts[best][1] or nexts[best][0] == "":
                b["pruned"] = True
    return [[t for t, ended in b["last"] if ended] for b in beams]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("n", "m", "how"), [(4, 2, "last"), (6, 3, "min")])
async def test_dvts_matches_search_and_learn(seed: int, n: int, m: int, how: str) -> None:
    iterations = 4
    per_subtree = reference_dvts(World(seed), n, m, iterations, how)
    ctx, _ = context(seed)
    search = DiverseVerifierTreeSearch(n=n, beam_width=m, max_steps=iterations, aggregation=how)  # type: ignore[arg-type]
    result = await search.run(ctx)
    texts = [t for subtree in per_subtree for t in subtree]
    assert [c.text for c in result.candidates] == texts
    scores = [aggregate(all_step_scores(seed, t), how) for t in texts]
    assert [c.reward for c in result.candidates] == pytest.approx(scores)
    assert result.best.text == texts[scores.index(max(scores))]


# -- its_hub's particle filtering, restated ----------------------------------------------
def inv_sigmoid(x: float) -> float:
    x = min(max(x, 1e-7), 1 - 1e-7)
    return math.log(x / (1 - x))


def reference_particle_filtering(
    world: World, n: int, max_steps: int, rng: random.Random
) -> tuple[list[str], list[float], list[list[int]]]:
    """``ParticleFiltering.infer`` with its PRM's ``model`` aggregation (the response so far
    as one step): the final particles, their log-weights and the copy counts per round.
    ``rng`` stands for its_hub's module-level ``random``."""
    particles = [{"steps": [], "stopped": False, "lw": []} for _ in range(n)]
    counts: list[list[int]] = []
    step = 0
    while not all(p["stopped"] for p in particles):
        for p in particles:
            if p["stopped"]:
                continue
            text, ended = world.sample("".join(p["steps"]), step == max_steps - 1)
            p["steps"].append(text)
            p["stopped"] = ended
            # reward_hub's AggregationMethod.MODEL: the response so far as one step.
            p["lw"].append(inv_sigmoid(step_score(world.seed, ["".join(p["steps"])])))
        step += 1
        log_weights = [p["lw"][-1] for p in particles]
        top = max(log_weights)
        exps = [math.exp(w - top) for w in log_weights]
        probabilities = [e / sum(exps) for e in exps]
        drawn = rng.choices(range(n), weights=probabilities, k=n)
        counts.append([drawn.count(i) for i in range(n)])
        particles = [copy.deepcopy(particles[i]) for i in drawn]
    return ["".join(p["steps"]) for p in particles], [p["lw"][-1] for p in particles], counts


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("n", [4, 6])
async def test_particle_filtering_matches_its_hub(seed: int, n: int) -> None:
    max_steps = 5
    texts, log_weights, counts = reference_particle_filtering(
        World(seed), n, max_steps, random.Random(seed)
    )
    ctx, _ = context(seed)
    result = await ParticleFiltering(n=n, max_steps=max_steps).run(ctx)
    assert [r["counts"] for r in result.details["rounds"]] == counts
    assert [c.text for c in result.candidates] == texts
    assert [inv_sigmoid(c.reward) for c in result.candidates] == pytest.approx(log_weights)
    # its_hub's answer: the argmax of the final log-weights (np.argmax: the first).
    assert result.best.text == texts[log_weights.index(max(log_weights))]
