"""The server's command line: ``serve`` flags mirror the Settings fields one to one
(``--default-n`` sets ``default_n``); unset flags fall back to ``ALIGNSERVE_*`` variables.
The ``alignserve`` console script (``tools.cli``) adds its tools' commands to these."""

from __future__ import annotations

import argparse
import json
import types
from typing import Any, Union, get_args, get_origin

from server.logs import setup_logging
from server.settings import Settings


def _scalar_type(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _engine_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--engine-arg wants KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def serve_parser(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _scalar_type(field.annotation)
        if name == "engine_args":
            parser.add_argument(
                "--engine-arg",
                dest=name,
                action="append",
                type=_engine_arg,
                default=None,
                metavar="KEY=VALUE",
                help="any other vLLM engine argument, VALUE parsed as JSON when it is JSON",
            )
        elif name == "reward":
            parser.add_argument(
                "--reward",
                dest=name,
                action="append",
                default=None,
                metavar="[NAME=]SPEC",
                help="a reward the server holds, picked per request with search.reward "
                "(repeatable; the first is the default unless --default-reward): judge, "
                "classifier:PATH_OR_ID, remote:URL, openai-judge:URL[#MODEL][,key_env=VAR]"
                "[,mode=auto|logprobs|json], python:MODULE:FUNCTION[#text]; constraints is "
                "always held (env ALIGNSERVE_REWARD: one spec or a JSON list)",
            )
        elif name == "prm":
            parser.add_argument(
                "--prm",
                dest=name,
                action="append",
                default=None,
                metavar="[NAME=]SPEC",
                help="a process reward model for the step searches, picked per request with "
                "search.prm (repeatable; the first is the default unless --default-prm): "
                "judge (the default), prm:PATH_OR_ID[#trust_remote_code], prm-remote:URL "
                "(env ALIGNSERVE_PRM: one spec or a JSON list)",
            )
        elif name == "api_key":
            parser.add_argument(
                "--api-key",
                dest=name,
                action="append",
                default=None,
                metavar="KEY",
                help="accept this Bearer key on the /v1 routes; repeatable "
                "(env ALIGNSERVE_API_KEY, comma-separated)",
            )
        elif name == "allowed_hosts":
            parser.add_argument(
                "--allowed-hosts",
                dest=name,
                default=None,
                metavar="HOST[,HOST...]",
                help="answer only requests whose Host header is one of these (a name, an "
                "address, or *.domain; the port is not compared); default: any host "
                "(env ALIGNSERVE_ALLOWED_HOSTS)",
            )
        elif name == "api_key_file":
            parser.add_argument(
                "--api-key-file",
                dest=name,
                default=None,
                metavar="PATH",
                help="accept the Bearer keys in this file, one per line (# comments), as "
                "well as --api-key's; unlike --api-key, not visible in ps "
                "(env ALIGNSERVE_API_KEY_FILE)",
            )
        elif kind is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                type=kind,
                default=None,
                help=f"(env ALIGNSERVE_{name.upper()}; default {field.default!r})",
            )


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    if "engine_args" in given:
        given["engine_args"] = dict(given["engine_args"])
    return Settings(**given)


def serve(settings: Settings, app: Any = None) -> int:
    """Run the server (``app``: a prebuilt one, for tests), draining on SIGTERM: see
    ``server.shutdown``. The exit status: 1 when the model failed to load or the engine
    died (see ``server.health``), so a supervisor restarts it or reports the failure."""
    from server.app import create_app
    from server.reaper import adopt_orphans, reap_descendants
    from server.shutdown import run_draining

    setup_logging(settings.log_level, settings.log_format)
    adopt_orphans()  # before the engine starts: its orphans come back here (server.reaper)
    try:
        return run_draining(
            app if app is not None else create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            grace_s=settings.shutdown_grace_s,
        )
    finally:
        reap_descendants()  # N10: no engine process outlives the server
