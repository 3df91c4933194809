"""The ``--reward`` spec: ``[NAME=]KIND[:TARGET]``, repeatable; each reward the server holds
has a name (by default its kind) that a request picks with ``search.reward``.

    judge                           the generative judge on the served engine
    classifier:PATH_OR_ID           a Hugging Face sequence classifier
    remote:URL                      a vLLM pooling server (/pooling or /classify)
    openai-judge:URL[#MODEL][,key_env=VAR][,mode=auto|logprobs|json][,prefill=true]
                                    a judge on any OpenAI-compatible chat endpoint; the key
                                    is read from the environment variable VAR, never given
                                    on the command line; prefill=true (vLLM servers only)
                                    starts the judge's reply with "Score: "
    python:MODULE:FUNCTION[#text]   a TRL-style reward function, fn(prompts, completions,
                                    **kwargs) -> list[float] (conversational format; #text:
                                    plain strings)
    constraints                     the rule-based verifier of search.constraints (always
                                    available, no model; built per request)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from search.protocols import ContextSized, Generator, JudgeTokenizer, RewardModel

KINDS_WITHOUT_TARGET = ("judge", "constraints")
KINDS_WITH_TARGET = ("classifier", "remote", "openai-judge", "python")
# The kinds whose criteria a request's search.rubric replaces.
RUBRIC_KINDS = ("judge", "openai-judge")
# The bare rule-based verifier every server holds under this name.
CONSTRAINTS = "constraints"
OPENAI_JUDGE_OPTIONS = ("key_env", "mode", "prefill")
USAGE = (
    "use [NAME=]judge, constraints, classifier:PATH_OR_ID, remote:URL, "
    "openai-judge:URL[#MODEL][,key_env=VAR][,mode=auto|logprobs|json][,prefill=true] "
    "or python:MODULE:FUNCTION[#text]"
)
_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]{0,63})=(.+)$")


@dataclass(frozen=True)
class RewardSpec:
    kind: str
    target: str = ""
    name: str = ""
    # Kind-specific options after '#' (openai-judge: model, key_env, mode; python: format).
    options: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.kind)

    @classmethod
    def parse(cls, spec: str) -> RewardSpec:
        named = _NAMED.match(spec)
        # "remote:http://h/x?a=b" has '=' too, but its text before '=' is no bare name.
        name, body = (named.group(1), named.group(2)) if named else ("", spec)
        kind, _, target = body.partition(":")
        if kind in KINDS_WITHOUT_TARGET and not target:
            return cls(kind, name=name)
        if kind not in KINDS_WITH_TARGET or not target:
            raise ValueError(f"bad reward spec {spec!r}: {USAGE}")
        options: dict[str, str] = {}
        if kind == "openai-judge":
            target, options = _openai_judge_target(spec, target)
        elif kind == "python":
            target, _, fmt = target.partition("#")
            module, _, function = target.partition(":")
            if not (module and function) or fmt not in ("", "text"):
                raise ValueError(f"bad reward spec {spec!r}: python:MODULE:FUNCTION[#text]")
            options = {"format": fmt or "conversational"}
        return cls(kind, target, name, options)

    @property
    def takes_rubric(self) -> bool:
        return self.kind in RUBRIC_KINDS

    def __str__(self) -> str:
        body = f"{self.kind}:{self.target}" if self.target else self.kind
        return body if self.name == self.kind else f"{self.name}={body}"


def _openai_judge_target(spec: str, target: str) -> tuple[str, dict[str, str]]:
    url, _, fragment = target.partition("#")
    model, *pairs = fragment.split(",") if fragment else [""]
    options = {"model": model}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in OPENAI_JUDGE_OPTIONS or not value:
            raise ValueError(
                f"bad reward spec {spec!r}: openai-judge options are "
                f"{', '.join(k + '=...' for k in OPENAI_JUDGE_OPTIONS)}, got {pair!r}"
            )
        options[key] = value
    if options.get("mode", "auto") not in ("auto", "logprobs", "json"):
        raise ValueError(f"bad reward spec {spec!r}: mode is auto, logprobs or json")
    if options.get("prefill", "false") not in ("true", "false"):
        raise ValueError(f"bad reward spec {spec!r}: prefill is true or false")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"bad reward spec {spec!r}: openai-judge needs an http(s) URL")
    return url, options


def parse_specs(specs: list[str], default: str | None) -> tuple[list[RewardSpec], str]:
    """Every spec parsed, with unique names, and the default reward's name (``default``,
    else the first). ``constraints`` is always held, added when no spec names it."""
    parsed = [RewardSpec.parse(s) for s in specs] or [RewardSpec("judge")]
    names = [p.name for p in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two --reward specs are named {duplicates[0]!r}: add NAME= to one")
    if any(p.name == CONSTRAINTS and p.kind != CONSTRAINTS for p in parsed):
        raise ValueError(f"the reward name {CONSTRAINTS!r} is the rule-based verifier's")
    if CONSTRAINTS not in names:
        parsed.append(RewardSpec(CONSTRAINTS))
    chosen = default or parsed[0].name
    if chosen not in {p.name for p in parsed}:
        raise ValueError(
            f"--default-reward {chosen!r} names no reward; have {', '.join(p.name for p in parsed)}"
        )
    return parsed, chosen


def build_reward(
    spec: RewardSpec,
    generator: Generator,
    tokenizer: JudgeTokenizer,
    *,
    api_key: str | None = None,
    max_model_len: int | None = None,
    judge_layout: str = "continuation",
) -> RewardModel | None:
    """The reward model a spec names; None for ``constraints``, which is built per request
    from its search.constraints. The judge runs on the served engine (in-process or
    remote) with the policy's tokenizer, and shortens its prompts to the engine's context:
    ``max_model_len``, else the generator's own (an in-process engine knows it)."""
    if spec.kind == "judge":
        from rewards.judge import JudgeReward

        known = generator.max_model_len if isinstance(generator, ContextSized) else None
        context = max_model_len or known
        return JudgeReward(generator, tokenizer, max_model_len=context, layout=judge_layout)
    if spec.kind == "constraints":
        return None
    if spec.kind == "classifier":
        from rewards.classifier import ClassifierReward

        return ClassifierReward(spec.target)
    if spec.kind == "openai-judge":
        return _openai_judge(spec)
    if spec.kind == "python":
        from rewards.python_reward import PythonReward

        return PythonReward.load(spec.target, fmt=spec.options["format"])
    from rewards.remote import RemoteReward

    return RemoteReward(spec.target, api_key=api_key)


def _openai_judge(spec: RewardSpec) -> RewardModel:
    from rewards.openai_judge import OpenAIJudgeReward

    key_env = spec.options.get("key_env")
    api_key = None
    if key_env:
        api_key = os.environ.get(key_env)
        if not api_key:
            raise ValueError(f"reward {spec.name}: the environment variable {key_env} is not set")
    return OpenAIJudgeReward(
        spec.target,
        spec.options.get("model") or None,
        api_key=api_key,
        mode=spec.options.get("mode", "auto"),
        prefill=spec.options.get("prefill") == "true",
    )
