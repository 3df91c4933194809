"""DARWIN: instruction mutation plus reward-guided beam replacement (``darwin``).

Paper: Hung, Majumder, Mehrish, Poria, "Reward-Guided Tree Search for Inference Time
Alignment of Large Language Models", NAACL 2025 (arXiv 2406.15193). Reference code:
declare-lab/darwin; the rule and defaults are the ones it runs (``--iteration=3
--n_mutation=1 --replacement_period=40``, top_k 3).

Rule: a seed output answers the conversation and starts the archive {the user's last
message: its reward}. Each of ``cycles`` cycles picks an archive instruction at random
(seeded); the policy rewrites it into 5 x ``mutations`` variants (own sampling:
temperature 0.7, top-k 40, up to ``rewrite_tokens``); one beam answers each variant. Every
``replacement_period`` tokens all beams are scored against the ORIGINAL conversation
(after ``look_ahead`` more tokens, then dropped), the top_k positions count a hit, and
every other live beam takes a random top-k beam's response and continues it under its own
variant. At a period live beams are judged on the partial rubric and finished ones on the
complete rubric, each finished text once per cycle (the reference re-scores it every
period with one reward model: with a deterministic reward the same number); those
complete scores are the cycle's final rewards. The two positions with the most hits
offer their variant with its final reward; one that beats the picked instruction joins
the archive, and the picked one leaves when beaten. The answer is the best of the seed
output and every cycle's final responses.

Options: ``mutations`` 1, ``replacement_period`` 40, ``top_k`` 3 (below 5 x mutations),
``cycles`` 3, ``rewrite_tokens`` 1024, ``look_ahead`` 0, ``replacement`` true (false: the
no-replacement ablation), ``seed``. ``search.n`` is replaced by 5 x mutations.

Budget: engine calls 1 + per cycle one rewrite call + one per live beam per period (twice
with look-ahead); tokens include rewrites and look-ahead; reward calls: the seed, one or
two per period (live, newly finished), and without replacement one per cycle's beams.
Bounds: cycles and mutations at most 16, at most 512 periods per cycle, rewrite_tokens
and look_ahead at most 4096.

Deviations from the reference (docs/algorithms.md has each reason): answer calls use the
client's sampling; responses continue on token ids; a short rewrite prompt whose missing
variants are copies of the picked instruction (``rewrites_parsed``); two judge rubrics
where the reference has one reward model (partial for live beams, complete for finished
ones, so a finished beam is rated as the answer it is) and the judge's separate layout
for the beams; look-ahead never passes max_tokens; the no-replacement ablation counts its
final top_k as hits (the reference's fails at its archive update); one seeded
``random.Random`` per request.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from search.budget import Work, check_segments
from search.context import SearchContext, gather_all
from search.errors import InvalidRequest
from search.partial import Partial, as_candidates, top_indices
from search.select import finish
from search.strategy import SearchStrategy
from search.types import Candidate, Completion, Message, SamplingConfig, SearchResult

VARIANTS_PER_REWRITE = 5
# How many of the most frequent top-k positions offer their instruction to the archive.
ARCHIVE_OFFERS = 2
# The reference's mutation sampling (darwin.py ``mutate``); max_tokens and seed are per call.
REWRITE_SAMPLING = SamplingConfig(temperature=0.7, top_k=40)
REWRITE_PROMPT = """Rewrite an instruction in 5 different ways. Each rewrite must ask for \
exactly the same thing, phrased differently and more clearly. Answer with a numbered list \
and nothing else.

Instruction: Give three tips for staying healthy.
Rewrites:
1. What are three pieces of advice for keeping healthy?
2. List three tips that help a person stay healthy.
3. Share three practical suggestions for maintaining good health.
4. Name three habits that keep someone healthy, with a short reason for each.
5. Could you give me three recommendations for a healthy lifestyle?

Instruction: {instruction}
Rewrites:"""
NUMBERED = re.compile(r"^\s*\d+\s*[.)]\s*(.+?)\s*$", re.MULTILINE)


def parse_rewrites(text: str, fallback: str) -> tuple[list[str], bool]:
    """Five variants from a numbered list; missing ones are copies of ``fallback``.
    The flag says whether all five parsed."""
    found = [m.group(1).strip().strip('"') for m in NUMBERED.finditer(text)]
    found = [f for f in found if f][:VARIANTS_PER_REWRITE]
    parsed = len(found) == VARIANTS_PER_REWRITE
    return found + [fallback] * (VARIANTS_PER_REWRITE - len(found)), parsed


def with_instruction(conversation: Sequence[Message], instruction: str) -> list[Message]:
    """The conversation with its last user message replaced by ``instruction``."""
    messages = [dict(m) for m in conversation]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = instruction
    return messages


def most_frequent(hits: Counter[int], k: int) -> list[int]:
    """The k positions with the most hits. Ties go to the position counted first: the
    reference sorts its insertion-ordered counter with a stable ``reverse=True`` sort."""
    return sorted(hits, key=hits.__getitem__, reverse=True)[:k]


def update_archive(
    archive: dict[str, float], parent: str, offers: Sequence[tuple[str, float]]
) -> tuple[list[dict[str, Any]], bool]:
    """utils.py ``Archive.update_archive``, in place: each offered (instruction, reward)
    that beats the parent's reward (read once, before any change) is set in the archive;
    the parent leaves when an instruction other than itself beat it. Returns what joined
    and whether the parent left."""
    parent_reward = archive[parent]
    beat = [(text, reward) for text, reward in offers if reward > parent_reward]
    archive.update(beat)
    left = any(text != parent for text, _ in beat)
    if left:
        del archive[parent]
    return [{"instruction": text, "reward": reward} for text, reward in beat], left


class Darwin(SearchStrategy):
    name = "darwin"

    mutations: int = Field(
        default=1, ge=1, le=16, strict=True, description="rewrite calls; 5 beams each"
    )
    replacement_period: int = Field(default=40, ge=1, strict=True, description="tokens per step")
    top_k: int = Field(
        default=3, ge=1, strict=True, description="beams kept at each step (< 5 x mutations)"
    )
    cycles: int = Field(default=3, ge=1, le=16, strict=True, description="mutate-and-search cycles")
    rewrite_tokens: int = Field(
        default=1024, ge=16, le=4096, strict=True, description="max tokens of one rewrite"
    )
    look_ahead: int = Field(
        default=0, ge=0, le=4096, strict=True, description="tokens sampled past a step to score it"
    )
    replacement: bool = Field(
        default=True, strict=True, description="false: the no-replacement ablation"
    )
    seed: int | None = Field(
        default=None, strict=True, description="seed of the archive and replacement draws"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_beam_per_variant(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mutations = data.get("mutations", cls.model_fields["mutations"].default)
        # A bad mutations value is reported by its own field; n only needs to be valid.
        ok = type(mutations) is int and mutations >= 1
        return {**data, "n": VARIANTS_PER_REWRITE * (mutations if ok else 1)}

    @field_validator("top_k")
    @classmethod
    def _below_the_beams(cls, top_k: int, info: ValidationInfo) -> int:
        beams = info.data.get("n")
        if beams is not None and top_k >= beams:
            raise ValueError(
                f"must be less than the number of beams, 5 x mutations = {beams}, "
                "or no beam is ever replaced"
            )
        return top_k

    def peak_candidates(self) -> int:
        return self.n  # one beam per variant, all alive until they finish

    def samples_per_call(self) -> int:
        # Every answer call samples one response; only the rewrite call asks for several,
        # and it never runs greedy (its own temperature 0.7).
        return 1

    def worst_case(self, max_tokens: int) -> Work:
        beams = self.n
        if self.replacement:
            steps = math.ceil(max_tokens / self.replacement_period)
            check_segments(steps, max_tokens, "search.replacement_period")
            peeks = steps if self.look_ahead else 0
        else:
            steps, peeks = 1, 0  # one call of max_tokens per beam, no step scores
        cycle = Work(
            tokens=self.mutations * self.rewrite_tokens
            + beams * max_tokens
            + peeks * beams * min(self.look_ahead, max_tokens),
            engine_calls=1 + (steps + peeks) * beams,
            reward_items=(steps * beams if self.replacement else 0) + beams,
        )
        seed = Work(tokens=max_tokens, engine_calls=1, reward_items=1)
        return seed + cycle * self.cycles

    async def mutate(self, ctx: SearchContext, instruction: str) -> tuple[list[str], list[bool]]:
        prompt = [{"role": "user", "content": REWRITE_PROMPT.format(instruction=instruction)}]
        with ctx.budget.phase("mutate"):
            rewrites = await ctx.generate(
                ctx.tokenizer.render_chat(prompt),
                self.rewrite_tokens,
                self.mutations,
                sampling=REWRITE_SAMPLING,
            )
        variants: list[str] = []
        parsed: list[bool] = []
        for rewrite in rewrites:
            found, ok = parse_rewrites(rewrite.text, instruction)
            variants += found
            parsed.append(ok)
        return variants, parsed

    async def extend(
        self, ctx: SearchContext, prompts: list[list[int]], beams: list[Partial], tokens: int
    ) -> list[Completion | None]:
        """Up to ``tokens`` more tokens for each unfinished beam under its own prompt, in
        one engine request each (None for finished beams)."""
        max_tokens = ctx.sampling.max_tokens
        live = [k for k, b in enumerate(beams) if not b.finished]
        segments = await gather_all(
            [
                ctx.generate(
                    [*prompts[k], *beams[k].token_ids],
                    min(tokens, max_tokens - beams[k].num_tokens),
                )
                for k in live
            ]
        )
        out: list[Completion | None] = [None] * len(beams)
        for k, (segment,) in zip(live, segments, strict=True):
            out[k] = segment
        return out

    async def step_scores(
        self,
        ctx: SearchContext,
        prompts: list[list[int]],
        beams: list[Partial],
        complete: dict[str, float],
    ) -> list[float]:
        """Every beam's score at a period: a live one on the partial rubric (after the
        look-ahead), a finished one on the complete rubric, once (``complete``, by text:
        the reference re-scores it every period, with a deterministic reward the same)."""
        texts = [b.text for b in beams]
        if self.look_ahead and any(not b.finished for b in beams):
            # The reference scores a peek further ahead but keeps only the step's tokens.
            with ctx.budget.phase("look_ahead"):
                ahead = await self.extend(ctx, prompts, beams, self.look_ahead)
            texts = [t + (a.text if a else "") for t, a in zip(texts, ahead, strict=True)]
        live = [k for k, b in enumerate(beams) if not b.finished]
        done = list(dict.fromkeys(b.text for b in beams if b.finished and b.text not in complete))
        with ctx.budget.phase("score_partial"):
            live_scores, done_scores = await gather_all(
                [ctx.score([texts[k] for k in live], partial=True), ctx.score(done, partial=False)]
            )
        complete.update(zip(done, done_scores, strict=True))
        scores = dict(zip(live, live_scores, strict=True))
        return [scores[k] if k in scores else complete[b.text] for k, b in enumerate(beams)]

    async def search(
        self,
        ctx: SearchContext,
        variants: list[str],
        rng: random.Random,
        complete: dict[str, float],
    ) -> tuple[list[Partial], Counter[int], int]:
        """One beam per variant until all finish; returns the beams (position k answers
        variant k), the top-k hits per position and the number of steps. ``complete``
        gathers the complete scores of the finished beams' texts."""
        max_tokens = ctx.sampling.max_tokens
        period = self.replacement_period if self.replacement else max_tokens
        prompts = [
            ctx.tokenizer.render_chat(with_instruction(ctx.conversation, v)) for v in variants
        ]
        beams = [Partial(root=k) for k in range(len(variants))]
        hits: Counter[int] = Counter()
        steps = 0
        while any(not b.finished for b in beams):
            with ctx.budget.phase("generate"):
                segments = await self.extend(ctx, prompts, beams, period)
            beams = [
                b if s is None else b.extend(s, max_tokens)
                for b, s in zip(beams, segments, strict=True)
            ]
            steps += 1
            if not self.replacement:
                continue  # one step of max_tokens finished every beam
            top = top_indices(await self.step_scores(ctx, prompts, beams, complete), self.top_k)
            hits.update(top)
            for k, beam in enumerate(beams):
                if k not in top and not beam.finished:
                    # Only the response moves: beam k keeps its prompt (its variant).
                    beams[k] = beams[rng.choice(top)]
        return beams, hits, steps

    async def run(self, ctx: SearchContext) -> SearchResult:
        if not any(m["role"] == "user" for m in ctx.conversation):
            # Checked before the seed output: the variants rewrite the last user message.
            raise InvalidRequest(
                "darwin rewrites the last user message, and the conversation has none",
                param="messages",
            )
        rng = random.Random(self.seed if self.seed is not None else ctx.sampling.seed)
        with ctx.budget.phase("generate"):
            (plain,) = await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens)
        with ctx.budget.phase("score"):
            (plain_reward,) = await ctx.score_generated([plain], partial=False)
        candidates = [Candidate(plain, plain_reward)]
        user = next(m["content"] for m in reversed(ctx.conversation) if m["role"] == "user")
        archive = {user: plain_reward}
        cycles: list[dict[str, Any]] = []
        for _ in range(self.cycles):
            picked = rng.choice(list(archive))
            picked_reward = archive[picked]
            variants, parsed = await self.mutate(ctx, picked)
            complete: dict[str, float] = {}  # finished texts' complete scores, this cycle
            beams, hits, steps = await self.search(ctx, variants, rng, complete)
            # Final rewards: the last period judged every beam complete (all had finished);
            # only the no-replacement ablation, which has no periods, scores them here.
            unscored = list(dict.fromkeys(b.text for b in beams if b.text not in complete))
            with ctx.budget.phase("score"):
                complete.update(
                    zip(unscored, await ctx.score(unscored, partial=False), strict=True)
                )
            rewards = [complete[b.text] for b in beams]
            if not self.replacement:
                hits = Counter(top_indices(rewards, self.top_k))
            candidates += as_candidates(beams, rewards)
            winners = most_frequent(hits, ARCHIVE_OFFERS)
            offers = [(variants[k], rewards[k]) for k in winners]
            joined, left = update_archive(archive, picked, offers)
            cycles.append(
                {
                    "picked": picked,
                    "picked_reward": picked_reward,
                    "variants": variants,
                    "rewrites_parsed": parsed,
                    # response_from: the beam whose first segment the final response grew
                    # from (another beam's after a replacement).
                    "beams": [
                        {"variant": k, "response_from": b.root, "reward": r}
                        for k, (b, r) in enumerate(zip(beams, rewards, strict=True))
                    ],
                    "topk_hits": [hits[k] for k in range(len(beams))],
                    "winners": winners,
                    "steps": steps,
                    "joined_archive": joined,
                    "left_archive": [picked] if left else [],
                }
            )
        final = [{"instruction": text, "reward": r} for text, r in archive.items()]
        return finish(ctx, candidates, {"cycles": cycles, "archive": final})
