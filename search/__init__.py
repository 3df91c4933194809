"""Search layer: value types, the Generator/RewardModel protocols, and the algorithms.

Pure asyncio; importing this package never imports torch or vllm.
"""
