"""Keep lm-eval's IFEval verdicts without IFEval's prompts (third-party text stays out of
the repository): one line per row with its key, instruction ids, the four verdicts and the
answer's length, from lm-eval's ``samples_ifeval_local_*.jsonl``.

    .venv/bin/python bench/ifeval/summarise.py SAMPLES.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    lines = []
    for line in source.read_text().splitlines():
        sample = json.loads(line)
        answer = sample["resps"][0][0]
        lines.append(
            {
                "key": sample["doc"]["key"],
                "instruction_id_list": sample["doc"]["instruction_id_list"],
                "prompt_level_strict": sample["prompt_level_strict_acc"],
                "inst_level_strict": sample["inst_level_strict_acc"],
                "prompt_level_loose": sample["prompt_level_loose_acc"],
                "inst_level_loose": sample["inst_level_loose_acc"],
                "answer_chars": len(answer),
            }
        )
    target.write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
