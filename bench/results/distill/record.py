"""Record verifier-guided Best-of-16 on the training split of the verifiable prompts
(issue 17's loop): every prompt's own constraints are the search's reward, and the
server's --record keeps every search for `alignserve distill`.

    python bench/results/distill/record.py URL OFFSET LIMIT [REWARD_JSON] [N]

REWARD_JSON: the search's reward (default "constraints"; e.g. '{"rm": 1, "constraints": 1}'
with a reward model the server holds as ``rm``); N: the Best-of-N (default 16).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

PROMPTS = Path(__file__).resolve().parents[3] / "tools" / "data" / "verifiable_prompts.jsonl"


def main(url: str, offset: int, limit: int, reward: object = "constraints", n: int = 16) -> None:
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines()][offset : offset + limit]
    met = 0
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client:
        for row in rows:
            body = {
                "messages": [{"role": "user", "content": row["prompt"]}],
                "max_tokens": 64,
                "temperature": 0.8,
                "search": {
                    "algorithm": "bon",
                    "n": n,
                    "reward": reward,
                    "constraints": row["constraints"],
                },
            }
            reply = client.post("/v1/chat/completions", json=body)
            reply.raise_for_status()
            report = reply.json()["search"]
            met += bool(report["constraints"]["all_met"][report["chosen_index"]])
    took = time.perf_counter() - start
    print(f"{len(rows)} prompts recorded, chosen meets all: {met}, {took:.0f} s")


if __name__ == "__main__":
    reward = json.loads(sys.argv[4]) if len(sys.argv) > 4 else "constraints"
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), reward, *map(int, sys.argv[5:6]))
