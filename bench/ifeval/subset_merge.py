"""Join runs of ``bench/ifeval/subset.py`` over parts of one subset (``--first``/``--skip``)
into one table over all their rows, configuration by configuration.

    .venv/bin/python bench/ifeval/subset_merge.py OUT.json PART.json [PART.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from subset import summary, table


def main() -> None:
    out, parts = Path(sys.argv[1]), [json.loads(Path(p).read_text()) for p in sys.argv[2:]]
    indices = [i for part in parts for i in part["indices"]]
    assert len(indices) == len(set(indices)), "the parts overlap"
    configs = []
    answers = {}
    for config in parts[0]["configs"]:
        name = config["config"]
        rows = [a for part in parts for a in part["answers"][name]]
        run_s = sum(
            c["run_s_per_prompt"] * c["prompts"]
            for part in parts
            for c in part["configs"]
            if c["config"] == name
        )
        configs.append(summary(name, config["n"], rows, run_s))
        answers[name] = rows
    merged = {"indices": indices, "configs": configs, "answers": answers}
    merged["settings"] = [part["settings"] for part in parts]
    out.write_text(json.dumps(merged, indent=1) + "\n")
    print(table(configs), end="")


if __name__ == "__main__":
    main()
