"""``alignserve distill``'s rows and refusals, no training: rows from a records directory
and from its export (the same rows), the damage a crash leaves against real corruption,
dpo without rewards, too few rows, an existing --out, and the seed reaching the trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.cli import build_parser
from tools.cli import main as cli_main
from tools.distill import check_out, trainer_config
from tools.distill_data import DistillDataError, load_rows
from tools.export import export

QUESTIONS = [
    ("What is the capital of France?", ["Lyon.", "Paris.", "Marseille."], [0.2, 0.9, 0.1]),
    ("How many legs has a spider?", ["Eight.", "Six.", "Ten."], [0.8, 0.3, 0.5]),
    ("What is 2 + 3?", ["5", "6", "23"], [0.7, 0.4, 0.4]),
]


def record(i: int, *, rewarded: bool = True, chosen: int | None = None) -> dict[str, Any]:
    question, answers, rewards = QUESTIONS[i % len(QUESTIONS)]
    if chosen is None:
        chosen = max(range(len(rewards)), key=lambda j: rewards[j]) if rewarded else 0
    return {
        "id": f"r{i}",
        "algorithm": "bon" if rewarded else "mbr",
        "conversation": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": question},
        ],
        "candidates": [
            {"text": a, "token_ids": [1], "logprobs": [-0.5], "reward": r if rewarded else 0.0}
            for a, r in zip(answers, rewards, strict=True)
        ],
        "chosen_index": chosen,
        "rewarded": rewarded,
    }


def write_shard(directory: Path, records: list[Any], name: str = "records-1-1-00001") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def prompt(i: int) -> list[dict[str, str]]:
    return record(i)["conversation"]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def refusal(directory: Path, method: str = "sft", **kw: Any) -> str:
    with pytest.raises(DistillDataError) as caught:
        load_rows(directory, method, min_rows=kw.pop("min_rows", 1), **kw)  # type: ignore[arg-type]
    return str(caught.value)


def test_sft_rows_from_records_are_the_chosen_answers_as_completions(tmp_path: Path) -> None:
    write_shard(tmp_path, [record(0), record(1), record(2, chosen=2)])
    data = load_rows(tmp_path, "sft", min_rows=3)
    assert data.source == "records" and data.read == 3
    assert data.rows == [
        {"prompt": prompt(0), "completion": answer("Paris.")},
        {"prompt": prompt(1), "completion": answer("Eight.")},
        {"prompt": prompt(2), "completion": answer("23")},  # the search's choice, not argmax
    ]


def test_dpo_rows_from_records_pair_best_against_worst(tmp_path: Path) -> None:
    write_shard(tmp_path, [record(0), record(1), record(2)])
    data = load_rows(tmp_path, "dpo", min_rows=3)
    assert data.rows == [
        {"prompt": prompt(0), "chosen": answer("Paris."), "rejected": answer("Marseille.")},
        {"prompt": prompt(1), "chosen": answer("Eight."), "rejected": answer("Six.")},
        # tied worst rewards (0.4, 0.4): the earlier candidate is the rejected one
        {"prompt": prompt(2), "chosen": answer("5"), "rejected": answer("6")},
    ]
    choice = load_rows(tmp_path, "dpo", pairs="choice", min_rows=1)
    assert len(choice.rows) == 3  # every chosen_index here is the argmax


def test_an_export_directory_gives_the_same_rows_as_its_records(tmp_path: Path) -> None:
    records = tmp_path / "records"
    written = [record(i) for i in range(6)] + [record(6, rewarded=False)]
    write_shard(records, written)
    exported = tmp_path / "export"
    export(written, exported, "best")
    for method in ("sft", "dpo"):
        from_records = load_rows(records, method, min_rows=1)  # type: ignore[arg-type]
        from_export = load_rows(exported, method, min_rows=1)  # type: ignore[arg-type]
        assert from_export.source == "export" and from_records.source == "records"
        assert from_export.rows == from_records.rows
    assert len(load_rows(exported, "sft", min_rows=1).rows) == 7
    assert len(load_rows(exported, "dpo", min_rows=1).rows) == 6


def test_records_win_when_a_directory_holds_shards_and_export_files(tmp_path: Path) -> None:
    write_shard(tmp_path, [record(0)])
    (tmp_path / "distill.jsonl").write_text("not json\n")
    assert load_rows(tmp_path, "sft", min_rows=1).source == "records"


def test_an_empty_or_missing_directory_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path)
    assert "no records-*.jsonl record shards and no export files" in message
    assert "is not a directory" in refusal(tmp_path / "nowhere")
    (tmp_path / "preferences.jsonl").write_text("")
    assert "has no distill.jsonl, which --method sft trains on" in refusal(tmp_path)


def test_a_cut_off_last_line_is_skipped_but_a_damaged_line_inside_is_refused(
    tmp_path: Path,
) -> None:
    shard = write_shard(tmp_path, [record(0), record(1)])
    with shard.open("a") as f:
        f.write(json.dumps(record(2))[:30])  # what a kill -9 leaves: no newline
    data = load_rows(tmp_path, "sft", min_rows=2)
    assert data.read == 2 and data.skipped["cut_off"] == 1
    assert "skipped 1 cut-off last lines" in data.summary()

    lines = shard.read_text().splitlines()
    shard.write_text(lines[0][:30] + "\n" + lines[1] + "\n")  # line 1 cut, then more written
    message = refusal(tmp_path)
    assert message.startswith(f"{shard}:1: not valid JSON")


def test_an_empty_line_is_refused_with_its_place(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, [record(0)])
    with shard.open("a") as f:
        f.write("\n" + json.dumps(record(1)) + "\n")
    assert refusal(tmp_path) == f"{shard}:2: empty line"


def test_export_files_tolerate_no_cut_off_line(tmp_path: Path) -> None:
    distill = tmp_path / "distill.jsonl"
    row = {"messages": [*prompt(0), *answer("Paris.")]}
    distill.write_text(json.dumps(row) + "\n" + json.dumps(row)[:20])
    message = refusal(tmp_path)
    assert message.startswith(f"{distill}:2: not valid JSON (cut off, ")


def test_rows_of_the_wrong_shape_are_refused_with_their_place(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, [record(0), {**record(1), "chosen_index": 7}])
    assert refusal(tmp_path).startswith(f"{shard}:2: not a search record")

    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "distill.jsonl").write_text(json.dumps({"messages": prompt(0)}) + "\n")
    assert "the last message must be the assistant's answer" in refusal(export_dir)
    pair = {"prompt": prompt(0), "chosen": "a", "rejected": "b", "chosen_reward": 1.0}
    (export_dir / "preferences.jsonl").write_text(json.dumps(pair) + "\n")
    assert "chosen_reward and rejected_reward" in refusal(export_dir, "dpo")


def test_dpo_on_records_without_rewards_is_refused(tmp_path: Path) -> None:
    write_shard(tmp_path / "records", [record(i, rewarded=False) for i in range(4)])
    message = refusal(tmp_path / "records", "dpo")
    assert message.startswith("dpo needs rewards: none of the 4 records")
    assert message.endswith("use --method sft")
    assert len(load_rows(tmp_path / "records", "sft", min_rows=4).rows) == 4

    exported = tmp_path / "export"
    export([record(i, rewarded=False) for i in range(4)], exported, "best")
    assert refusal(exported, "dpo").startswith("dpo needs rewards:")


def test_unusable_records_are_counted_and_too_few_rows_are_refused(tmp_path: Path) -> None:
    tied = record(0)
    for c in tied["candidates"]:
        c["reward"] = 0.5
    nan = record(1)
    nan["candidates"][0]["reward"] = float("nan")
    empty = record(1)
    empty["candidates"][0]["text"] = "  "  # the chosen (highest-reward) answer
    write_shard(tmp_path, [tied, nan, empty, record(0, rewarded=False), record(1)])

    dpo = load_rows(tmp_path, "dpo", min_rows=2)
    # The reward model preferred the empty answer: that pair is data as any other.
    assert [row["chosen"] for row in dpo.rows] == [answer("  "), answer("Eight.")]
    assert dict(dpo.skipped) == {"no_pair": 1, "non_finite": 1, "unrewarded": 1}
    sft = load_rows(tmp_path, "sft", min_rows=1)
    assert [row["completion"] for row in sft.rows] == [
        answer("Paris."),  # tied rewards still have the search's choice
        answer("Lyon."),  # no rewards: the search's (mbr's) choice
        answer("Eight."),
    ]
    assert dict(sft.skipped) == {"non_finite": 1, "empty_answer": 1}

    message = refusal(tmp_path, "dpo", min_rows=8)
    assert message.startswith(f"2 usable dpo rows in {tmp_path}, fewer than --min-rows 8 (")
    assert "skipped 1 records with non-finite rewards" in message


def test_a_pair_with_the_same_text_on_both_sides_is_skipped(tmp_path: Path) -> None:
    same = record(0)
    for c in same["candidates"]:
        c["text"] = "Paris."
    write_shard(tmp_path, [same, record(1)])
    data = load_rows(tmp_path, "dpo", min_rows=1)
    assert len(data.rows) == 1 and dict(data.skipped) == {"same_text": 1}


def test_an_existing_out_is_refused_unless_overwrite_and_a_model_folder(tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert check_out(out, overwrite=False) == out
    out.mkdir()
    with pytest.raises(DistillDataError, match="exists; pass --overwrite to replace it"):
        check_out(out, overwrite=False)
    assert check_out(out, overwrite=True) == out  # empty: fine
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DistillDataError, match=r"no model folder \(no config.json\)"):
        check_out(out, overwrite=True)
    (out / "config.json").write_text("{}")
    assert check_out(out, overwrite=True) == out
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(DistillDataError, match="is a link or not a folder"):
        check_out(file, overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(DistillDataError, match="is a link or not a folder"):
        check_out(link, overwrite=True)  # never replaces what a link points to


def test_the_command_refuses_in_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_shard(tmp_path / "records", [record(0, rewarded=False)])
    (tmp_path / "taken").mkdir()
    cases = [
        (["--out", str(tmp_path / "taken")], "exists; pass --overwrite"),
        (["--out", str(tmp_path / "m"), "--method", "dpo"], "dpo needs rewards"),
        (["--out", str(tmp_path / "m")], "1 usable sft rows"),  # --min-rows defaults to 8
    ]
    for extra, expected in cases:
        assert cli_main(["distill", str(tmp_path / "records"), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("alignserve distill: ") and expected in captured.err
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "m").exists()


def test_the_seed_reaches_the_trainer_and_its_data_order(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["distill", "records", "--out", "m", "--seed", "7", "--max-steps", "3"]
    )
    sft = trainer_config(args, tmp_path, on_gpu=False)
    assert (sft.seed, sft.data_seed, sft.max_steps) == (7, 7, 3)
    assert sft.learning_rate == 2e-5 and not sft.bf16 and not sft.gradient_checkpointing
    assert type(sft).__name__ == "SFTConfig" and sft.report_to == []

    args = parser.parse_args(["distill", "r", "--out", "m", "--method", "dpo", "--beta", "0.3"])
    dpo = trainer_config(args, tmp_path, on_gpu=False)
    assert type(dpo).__name__ == "DPOConfig" and (dpo.beta, dpo.seed, dpo.data_seed) == (0.3, 0, 0)
    assert dpo.learning_rate == 1e-6
    args = parser.parse_args(["distill", "r", "--out", "m", "--lora", "--learning-rate", "3e-4"])
    assert trainer_config(args, tmp_path, on_gpu=False).learning_rate == 3e-4
