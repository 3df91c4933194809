"""ε-sampling as a vLLM logits processor: a request's ``epsilon`` drops every token whose
probability is below ε before sampling (Hewitt, Manning and Liang 2022, "Truncation
Sampling as Language Model Desmoothing"), the sampler of the RBoN, SRBoN and MBR papers
(Jinnai et al. 2024 sample with ε = 0.01 at temperature 1.0). vLLM has no ε sampler of
its own (its SamplingParams have top-p, top-k and min-p), so this is one, loaded by the
engine (``logits_processors``) and switched on per request by
``SamplingParams.extra_args["epsilon"]``; a remote vLLM server loads it with
``--logits-processors engines.epsilon:EpsilonLogitsProcessor`` and receives ε as
``vllm_xargs``.

Nothing but vLLM imports this module (it imports torch and vLLM at module level, as vLLM
loads it by name): the rest of alignserve names it by ``EPSILON_PROCESSOR``
(engines.vllm_local).

The rule, as transformers' ``EpsilonLogitsWarper``: probabilities are read after the
temperature, a token is kept when p >= ε, and the likeliest token is always kept (so
greedy decoding is unchanged and no row is left empty). One difference: vLLM applies
top-k and top-p after this processor, transformers before ε, so with those set too the
kept sets can differ; the papers use ε alone.

One class for both of vLLM's model runners, whose processor interfaces differ:

- V1 (the CPU build; ``is_argmax_invariant``): applied after the temperature, with min-p,
  on the rows of requests that have ε; state per persistent-batch row (``update_state``).
- V2 (the GPU default): ``apply`` sees logits before the temperature, so the probabilities
  are taken of logits / T with the request's own T; state per request slot
  (``add_request``).

vLLM tells them apart by the constructor's arguments, and each runner checks its own
base class, so this class derives from both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

# Temperatures below this are greedy in vLLM (its _SAMPLING_EPS): no scaling then.
GREEDY_TEMPERATURE = 1e-5


def epsilon_of(params: SamplingParams) -> float:
    """The request's ε (0.0: off); ValueError when it is not a number in [0, 1)."""
    value = (params.extra_args or {}).get("epsilon", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"epsilon must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"epsilon must be in [0, 1), got {value}")
    return float(value)


def truncate(
    logits: torch.Tensor, epsilon: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """``logits`` (rows x vocabulary) with the tokens under ε (one per row, shape rows x 1)
    masked to -inf, probabilities taken at ``temperature`` (rows x 1); the likeliest token
    of each row is kept. A row with ε = 0 is unchanged."""
    probs = torch.softmax(logits / temperature, dim=-1)
    drop = probs < epsilon
    drop.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(drop, -math.inf)


class EpsilonLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    def __init__(self, vllm_config: Any, *args: Any) -> None:
        # V1: (vllm_config, device, is_pin_memory); V2: (vllm_config, req_states).
        self.v2 = len(args) == 1
        # V1: persistent-batch row -> ε, for the rows that have one.
        self.rows: dict[int, float] = {}
        if self.v2:
            states = args[0]
            self.device = states.device
            self.epsilon_host = np.zeros(states.max_num_reqs, dtype=np.float32)
            self.temperature_host = np.ones(states.max_num_reqs, dtype=np.float32)
            self.epsilon = torch.zeros(states.max_num_reqs, device=self.device)
            self.temperature = torch.ones(states.max_num_reqs, device=self.device)
            self.staged = False

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        epsilon_of(sampling_params)

    # -- V1 -------------------------------------------------------------------------------
    def is_argmax_invariant(self) -> bool:
        # The likeliest token is always kept: V1 then applies this after the temperature.
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(
            self.rows, batch_update, lambda params, _, __: epsilon_of(params) or None
        )

    # -- V2 -------------------------------------------------------------------------------
    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        epsilon = epsilon_of(sampling_params)
        temperature = sampling_params.temperature
        self.epsilon_host[req_idx] = epsilon
        self.temperature_host[req_idx] = temperature if temperature >= GREEDY_TEMPERATURE else 1.0
        self.staged = True
        return epsilon > 0.0

    def apply_staged_writes(self) -> None:
        if self.staged:
            self.epsilon.copy_(torch.from_numpy(self.epsilon_host))
            self.temperature.copy_(torch.from_numpy(self.temperature_host))
            self.staged = False

    # -- both -----------------------------------------------------------------------------
    def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        if not self.v2:
            if not self.rows:
                return logits
            rows = torch.tensor(list(self.rows), device=logits.device)
            epsilon = torch.tensor(list(self.rows.values()), device=logits.device)
            ones = torch.ones_like(epsilon)
            logits[rows] = truncate(logits[rows], epsilon.unsqueeze(1), ones.unsqueeze(1))
            return logits
        if not (self.epsilon_host[ctx.idx_mapping_np] > 0.0).any():
            return logits  # no request of this step has ε: no device work, no sync
        slots = ctx.expanded_idx_mapping
        epsilon = self.epsilon[slots].unsqueeze(1)
        temperature = self.temperature[slots].unsqueeze(1)
        return truncate(logits, epsilon, temperature)
