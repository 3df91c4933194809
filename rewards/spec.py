"""The ``--reward`` spec: ``judge``, ``classifier:PATH_OR_ID`` or ``remote:URL``."""

from __future__ import annotations

from dataclasses import dataclass

from search.engines.tokenizer import HFChatTokenizer
from search.protocols import Generator, RewardModel


@dataclass(frozen=True)
class RewardSpec:
    kind: str
    target: str = ""

    @classmethod
    def parse(cls, spec: str) -> RewardSpec:
        kind, _, target = spec.partition(":")
        if kind == "judge" and not target:
            return cls(kind)
        if kind in ("classifier", "remote") and target:
            return cls(kind, target)
        raise ValueError(
            f"bad reward spec {spec!r}: use judge, classifier:PATH_OR_ID or remote:URL"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


def build_reward(
    spec: RewardSpec,
    generator: Generator,
    tokenizer: HFChatTokenizer,
    *,
    api_key: str | None = None,
) -> RewardModel:
    """The judge runs on the served engine (in-process or remote) with the policy's tokenizer."""
    if spec.kind == "judge":
        from rewards.judge import JudgeReward

        return JudgeReward(generator, tokenizer)
    if spec.kind == "classifier":
        from rewards.classifier import ClassifierReward

        return ClassifierReward(spec.target)
    from rewards.remote import RemoteReward

    return RemoteReward(spec.target, api_key=api_key)
