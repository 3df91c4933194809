"""The ``--prm`` spec: ``[NAME=]KIND[:TARGET]``, repeatable; a step search (beam_search, dvts,
particle_filtering) scores each step with the one a request names in ``search.prm``, by
default the first.

    judge                               the generative judge rating the latest step in
                                        context (rewards/judge_prm.py), on the served engine
    prm:PATH_OR_ID[#trust_remote_code]  a PRM in-process with transformers
                                        (rewards/prm_local.py); trust_remote_code runs the
                                        model repository's code (Qwen2.5-Math-PRM needs it)
    prm-remote:URL                      a PRM on a vLLM pooling server (rewards/prm_remote.py)

Process rewards are kept apart from the outcome rewards of ``--reward``: they score steps,
not responses, and no search mixes the two kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from search.protocols import Generator, JudgeTokenizer, ProcessRewardModel

KINDS = ("judge", "prm", "prm-remote")
USAGE = "use [NAME=]judge, prm:PATH_OR_ID[#trust_remote_code] or prm-remote:URL"
_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]{0,63})=(.+)$")


@dataclass(frozen=True)
class PRMSpec:
    kind: str
    target: str = ""
    name: str = ""
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.kind)

    @classmethod
    def parse(cls, spec: str) -> PRMSpec:
        named = _NAMED.match(spec)
        name, body = (named.group(1), named.group(2)) if named else ("", spec)
        kind, _, target = body.partition(":")
        if kind == "judge" and not target:
            return cls(kind, name=name)
        if kind == "prm" and target:
            path, _, option = target.partition("#")
            if option not in ("", "trust_remote_code") or not path:
                raise ValueError(f"bad PRM spec {spec!r}: prm:PATH_OR_ID[#trust_remote_code]")
            return cls(kind, path, name, trust_remote_code=option == "trust_remote_code")
        if kind == "prm-remote" and target.startswith(("http://", "https://")):
            return cls(kind, target, name)
        raise ValueError(f"bad PRM spec {spec!r}: {USAGE}")


def parse_prm_specs(specs: list[str], default: str | None) -> tuple[list[PRMSpec], str | None]:
    """Every spec parsed, with unique names, and the default's name (``default``, else the
    first; None when there is none)."""
    parsed = [PRMSpec.parse(s) for s in specs]
    names = [p.name for p in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two --prm specs are named {duplicates[0]!r}: add NAME= to one")
    chosen = default or (names[0] if names else None)
    if chosen is not None and chosen not in names:
        raise ValueError(f"--default-prm {chosen!r} names no PRM; have {', '.join(names)}")
    return parsed, chosen


def build_prm(
    spec: PRMSpec,
    generator: Generator,
    tokenizer: JudgeTokenizer,
    *,
    api_key: str | None = None,
    max_model_len: int | None = None,
    judge_layout: str = "continuation",
) -> ProcessRewardModel:
    """The PRM a spec names; the judge kind builds a judge of its own on the served
    engine (see rewards.spec.build_reward)."""
    if spec.kind == "judge":
        from rewards.judge_prm import JudgePRM
        from rewards.spec import RewardSpec, build_reward

        judge = build_reward(
            RewardSpec("judge"),
            generator,
            tokenizer,
            max_model_len=max_model_len,
            judge_layout=judge_layout,
        )
        assert judge is not None  # only the constraints kind builds no model
        return JudgePRM(judge)
    if spec.kind == "prm":
        from rewards.prm_local import LocalPRM

        return LocalPRM(spec.target, trust_remote_code=spec.trust_remote_code)
    from rewards.prm_remote import RemotePRM

    return RemotePRM(spec.target, api_key=api_key)
