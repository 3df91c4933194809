"""Algorithm name -> strategy class, and parsing of the request's ``search`` object."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from search.adaptive_bon import AdaptiveBoN
from search.beam_search import BeamSearch
from search.bon import BestOfN
from search.darwin import Darwin
from search.dvts import DiverseVerifierTreeSearch
from search.errors import SHOWN_CHARS, InvalidRequest, shown
from search.majority import MajorityVote
from search.mbr import MinimumBayesRisk
from search.particle_filtering import ParticleFiltering
from search.rbon_kl import RegularizedBoNKL
from search.rbon_wd import RegularizedBoNWD
from search.single import SingleResponse
from search.spec_rejection import SpeculativeRejection
from search.srbon import StochasticRBoN
from search.strategy import SearchStrategy
from search.treebon import TreeBoN

STRATEGIES: dict[str, type[SearchStrategy]] = {
    cls.name: cls
    for cls in (
        BestOfN,
        RegularizedBoNKL,
        RegularizedBoNWD,
        StochasticRBoN,
        MinimumBayesRisk,
        MajorityVote,
        TreeBoN,
        SpeculativeRejection,
        Darwin,
        AdaptiveBoN,
        BeamSearch,
        DiverseVerifierTreeSearch,
        ParticleFiltering,
        SingleResponse,
    )
}


def parse_strategy(options: dict[str, Any], *, param_prefix: str = "search") -> SearchStrategy:
    """Build the named strategy; bad input raises InvalidRequest naming the field."""
    options = dict(options)
    algorithm = options.pop("algorithm", "bon")
    cls = STRATEGIES.get(algorithm) if isinstance(algorithm, str) else None
    if cls is None:
        known = ", ".join(sorted(STRATEGIES))
        raise InvalidRequest(
            f"unknown search algorithm {shown(algorithm)}; known: {known}",
            param=f"{param_prefix}.algorithm",
        )
    return validate_options(cls, options, param_prefix, context=f" for {algorithm}")


M = TypeVar("M", bound=BaseModel)


def validate_options(
    model: type[M], options: dict[str, Any], param_prefix: str, *, context: str = ""
) -> M:
    """``model`` from a request's options; the first error becomes an InvalidRequest whose
    param names the field (``search.beta``)."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        if len(field) > SHOWN_CHARS:  # an unknown key is client text (N8)
            field = field[: SHOWN_CHARS - 3] + "..."
        raise InvalidRequest(
            f"invalid {param_prefix}.{field}{context}: {first['msg']}",
            param=f"{param_prefix}.{field}",
        ) from None
