"""DARWIN: instruction mutation plus reward-guided beam replacement (``darwin``).

Paper: Hung, Majumder, Chia, Poria 2024, "Inference-Time Alignment through Evolutionary
Heuristics" (DARWIN, declare-lab, arXiv 2406.15193). Defaults follow the authors' code:
replacement_period 40, top_k 3, one cycle.

Rule:
1. Plain seed output: one complete response to the user's conversation, scored.
2. The archive of instructions starts with the user's last message (its reward is the
   seed output's). Each of ``cycles`` cycles:
   a. pick the archive's best instruction; the policy model rewrites it ``mutations``
      times with a one-shot prompt that asks for 5 numbered rewrites (mutations x 5
      variants); a rewrite that cannot be parsed is filled with copies of the picked one.
   b. n beams, beam k answering variant k mod (mutations x 5) in place of the user's last
      message. Every ``replacement_period`` tokens: decode that many tokens for every
      unfinished beam (one engine request each, on its prompt ids + its ids, so the
      prefix cache serves it), score every beam's partial response against the ORIGINAL
      conversation, keep the top_k and replace every other unfinished beam with a copy of
      a top-k beam drawn at random (seeded). Repeat until all beams finish.
   c. score the final beams' responses as complete, against the original conversation.
      The instruction whose beams reached the top-k most often joins the archive if its
      best response beats the picked instruction's reward.
3. The answer is the best of the seed output and every cycle's final beams.

Answers are always scored and returned against the user's real conversation; the
mutated instructions only steer generation. They appear in ``details.cycles``, with the
top-k hit counts and what joined the archive.

Budget: engine calls 1 (seed) + ``mutations`` rewrites (one call with n=mutations) + one
per unfinished beam per period; generated tokens include the rewrites. Reward calls: the
seed, one per period, and one for each cycle's final beams.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import Field

from search.partial import Partial, as_candidates, top_indices
from search.strategy import SearchContext, SearchStrategy, finish, gather_all
from search.types import Candidate, Message, SearchResult

VARIANTS_PER_REWRITE = 5
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


@dataclass(frozen=True)
class Beam:
    variant: int
    partial: Partial


class Darwin(SearchStrategy):
    name = "darwin"

    mutations: int = Field(default=1, ge=1, le=64, strict=True, description="rewrites (x5)")
    replacement_period: int = Field(default=40, ge=1, strict=True, description="tokens per step")
    top_k: int = Field(default=3, ge=1, strict=True, description="beams kept at each step")
    cycles: int = Field(default=1, ge=1, le=64, strict=True, description="mutate-and-search cycles")
    rewrite_tokens: int = Field(
        default=256, ge=16, le=4096, strict=True, description="max tokens of one rewrite"
    )
    seed: int | None = Field(
        default=None, strict=True, description="seed of the replacement draws; default: request"
    )

    def last_user_message(self, ctx: SearchContext) -> str:
        return next(m["content"] for m in reversed(ctx.conversation) if m["role"] == "user")

    async def mutate(self, ctx: SearchContext, instruction: str) -> tuple[list[str], list[bool]]:
        prompt = [{"role": "user", "content": REWRITE_PROMPT.format(instruction=instruction)}]
        with ctx.budget.phase("mutate"):
            rewrites = await ctx.generate(
                ctx.tokenizer.render_chat(prompt), self.rewrite_tokens, self.mutations
            )
        variants: list[str] = []
        parsed: list[bool] = []
        for rewrite in rewrites:
            found, ok = parse_rewrites(rewrite.text, instruction)
            variants += found
            parsed.append(ok)
        return variants, parsed

    async def search(
        self, ctx: SearchContext, variants: list[str], rng: random.Random
    ) -> tuple[list[Beam], Counter[int], int]:
        """Beams under the variants until all finish; returns them, the top-k hits per
        variant and the number of replacement steps."""
        max_tokens = ctx.sampling.max_tokens
        tok = ctx.tokenizer
        prompts = [tok.render_chat(with_instruction(ctx.conversation, v)) for v in variants]
        beams = [Beam(k % len(variants), Partial(root=k)) for k in range(self.n)]
        hits: Counter[int] = Counter()
        steps = 0
        while any(not b.partial.finished for b in beams):
            live = [k for k, b in enumerate(beams) if not b.partial.finished]
            with ctx.budget.phase("generate"):
                segments = await gather_all(
                    [
                        ctx.generate(
                            [*prompts[beams[k].variant], *beams[k].partial.token_ids],
                            min(self.replacement_period, max_tokens - beams[k].partial.num_tokens),
                        )
                        for k in live
                    ]
                )
            for k, (segment,) in zip(live, segments, strict=True):
                beams[k] = replace(beams[k], partial=beams[k].partial.extend(segment, max_tokens))
            with ctx.budget.phase("score_partial"):
                scores = await ctx.score([b.partial.text for b in beams], partial=True)
            top = top_indices(scores, self.top_k)
            hits.update(beams[k].variant for k in top)
            for k, beam in enumerate(beams):
                if k not in top and not beam.partial.finished:
                    beams[k] = beams[rng.choice(top)]
            steps += 1
        return beams, hits, steps

    async def run(self, ctx: SearchContext) -> SearchResult:
        seed = self.seed if self.seed is not None else ctx.sampling.seed
        rng = random.Random(seed)
        with ctx.budget.phase("generate"):
            (plain,) = await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens)
        with ctx.budget.phase("score"):
            (plain_reward,) = await ctx.score([plain.text], partial=False)
        candidates = [Candidate(plain, plain_reward)]
        seed_entry = {"instruction": self.last_user_message(ctx), "reward": plain_reward}
        archive: list[dict[str, Any]] = [seed_entry]
        cycles: list[dict[str, Any]] = []
        for _ in range(self.cycles):
            picked = max(archive, key=lambda entry: entry["reward"])
            variants, parsed = await self.mutate(ctx, picked["instruction"])
            beams, hits, steps = await self.search(ctx, variants, rng)
            with ctx.budget.phase("score"):
                rewards = await ctx.score([b.partial.text for b in beams], partial=False)
            candidates += as_candidates([b.partial for b in beams], rewards)
            added = self.promote(variants, beams, rewards, hits, picked["reward"])
            archive += added
            cycles.append(
                {
                    "picked": picked["instruction"],
                    "variants": variants,
                    "rewrites_parsed": parsed,
                    "topk_hits": {variants[v]: count for v, count in hits.most_common()},
                    "steps": steps,
                    "beam_variants": [b.variant for b in beams],
                    "added_to_archive": [a["instruction"] for a in added],
                }
            )
        return finish(ctx, candidates, {"cycles": cycles, "archive": archive})

    def promote(
        self,
        variants: list[str],
        beams: list[Beam],
        rewards: list[float],
        hits: Counter[int],
        picked_reward: float,
    ) -> list[dict[str, Any]]:
        """The most frequent top-k variant(s) whose best final response beat the picked
        instruction's reward, as archive entries."""
        if not hits:
            return []
        most = max(hits.values())
        added = []
        for v in sorted(variant for variant, count in hits.items() if count == most):
            own = [r for b, r in zip(beams, rewards, strict=True) if b.variant == v]
            best = max(own, default=None)
            if best is not None and best > picked_reward:
                added.append({"instruction": variants[v], "reward": best})
        return added
