"""HTTP layer: app factory, OpenAI protocol, routes, streaming, errors, metrics.

Never imports torch or vllm at module level; the runtime loads them in the background.
"""
