"""Reward models: a generative judge on a vLLM engine, a Hugging Face sequence classifier,
and a remote vLLM pooling server. Each implements ``search.protocols.RewardModel``."""
