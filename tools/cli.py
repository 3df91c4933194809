"""``alignserve`` console script. ``serve`` runs the server (its flags: ``server.cli``).
``eval`` takes the same flags (for its engine and reward model) plus its own; so does
``bench`` (its ``--vs-engine`` mode loads the engine those flags describe). ``export``
turns ``--record`` search records into training sets; ``distill`` trains a model on them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from server.cli import serve, serve_parser, settings_from_args
from tools import bench_cli, distill, eval_cli, export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser(commands.add_parser("serve", help="run the OpenAI-compatible server"))
    evaluate = commands.add_parser(
        "eval",
        help="run algorithms over a prompt set at several budgets; write a table, JSON and a plot",
        description=eval_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_parser(evaluate)  # the same model, engine and reward flags as serve
    eval_cli.add_arguments(evaluate)
    bench = commands.add_parser(
        "bench",
        help="load sweep of a server over concurrency levels; throughput, latency, plots",
        description=bench_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_parser(bench)  # --vs-engine serves this engine; --api-key is also the client's key
    bench_cli.add_arguments(bench)
    export.add_arguments(
        commands.add_parser(
            "export",
            help="turn --record search records into training sets",
            description=export.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    distill.add_arguments(
        commands.add_parser(
            "distill",
            help="train a model (SFT or DPO, TRL) on --record records or their export",
            description=distill.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        return export.main(args)
    if args.command == "distill":
        return distill.main(args)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        # One line per problem, not a traceback: the operator's fix is in the message.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        parser.exit(2, f"alignserve {args.command}: {problems}\n")
    if args.command == "eval":
        return eval_cli.main(settings, args)
    if args.command == "bench":
        return bench_cli.main(settings, args)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
