"""Command line: flags in the Prometheus exporter style, exit codes.

Exit codes: 0 stopped cleanly or config valid; 1 the watcher failed, or did not stop within
``service.shutdown_timeout_seconds`` (or a SIGINT while stopping forced it); 2 bad configuration;
3 another watcher uses the state directory.
``deployment-watcher notify …`` is the CI/CD client, ``rollout status NAME`` the CI gate, ``rollout
history NAME`` a deployment's rollouts and ``status [--watch]`` the table of deployments, each with its own flags and exit codes (watcher.clients);
``--help`` lists them under the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from watcher import __version__, arguments, config
from watcher.clients import notify, rollout, status
from watcher.persistence.statefile import FILE_NAME, DirectoryInUse, state_directory
from watcher.runtime.compose import Watcher
from watcher.runtime.shutdown import ShutdownIncomplete
from watcher.sources.analysis import trial
from watcher.sources.api import reports as api

log = logging.getLogger("watcher")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_IN_USE = 0, 1, 2, 3

PROG = "deployment-watcher"
# How long a thread holding the GIL may keep it while another waits (CPython's default: 5 ms). Renderings
# and saves run in worker threads, and the event loop drops the GIL in every socket write: with 5 ms,
# an event streamed to 1,000 clients waited up to 5 ms at many of its writes whenever a worker was busy
# (issue #21: p99 ~70-80 ms at 5,000 deployments, ~50-55 ms with 1 ms).
SWITCH_INTERVAL_SECONDS = 0.001
# Subcommand → its entry point and one line for --help. Each parses its own flags: it must come first.
COMMANDS = {
    "notify": (notify.main, "report a rollout from CI/CD to a running watcher (see 'notify --help')"),
    "rollout": (
        rollout.main,
        "'rollout status NAME': wait for a rollout's verdict, exit 0 when it succeeded; "
        "'rollout history NAME': list its rollouts",
    ),
    "status": (status.main, "print the deployments a running watcher tracks, like docker ps (--watch: live)"),
}


def parser() -> argparse.ArgumentParser:
    p = arguments.Parser(
        prog=PROG,
        usage=f"{PROG} [FLAGS]\n" + "".join(f"       {PROG} {name} [FLAGS]\n" for name in COMMANDS),
        description="Watch Docker deployments and serve them as Prometheus metrics. Without a command, "
        "the watcher runs.",
        epilog=f"Every flag can also be set in the config file or as an environment variable "
        f"({config.ENV_PREFIX}<SECTION>_<FIELD>); flags win.",
    )
    # Listed for --help only: main() hands a command and the rest of the line to its own parser.
    # The positionals' group is shown before the flags, and holds nothing but the commands.
    p._positionals.title = "commands (each with its own flags, after it)"
    commands = p.add_subparsers(dest="command", metavar="COMMAND", help="without one, the watcher runs")
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    p.add_argument("--config.file", dest="config_file", metavar="PATH",
                   help=f"YAML configuration file (or ${config.CONFIG_FILE_ENV})")  # fmt: skip
    p.add_argument("--check-config", action="store_true", help="validate the configuration, print it and exit")
    p.add_argument("--version", action="version", version=f"deployment-watcher {__version__}")
    for option in config.options():
        extra = f" (one of: {', '.join(option.choices)})" if option.choices else ""
        p.add_argument(
            option.flag,
            dest=option.path,
            metavar="BOOL" if option.type is bool else option.type.__name__.upper(),
            default=None,
            help=f"{option.help}{extra}; default {option.default!r}",
        )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        command, _ = COMMANDS[argv[0]]
        return command(argv[1:])
    p = parser()
    namespace, unknown = p.parse_known_args(argv)
    args = vars(namespace)
    if args["command"]:  # after the watcher's flags, which would not apply to it
        p.error(f"the command comes first: {PROG} {args['command']} [FLAGS]")
    if unknown:
        p.error(arguments.UNRECOGNIZED + " ".join(unknown))  # with hints: Parser.error
    flags = {path: value for path, value in args.items() if "." in path and value is not None}
    try:
        settings = config.load(file=args["config_file"], flags=flags)
        api_token = api.read_token(settings.api, os.environ)
    except config.ConfigError as exc:
        print("deployment-watcher: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args["check_config"]:
        return _check_config(settings)
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    errors: tuple[Exception, ...] = ()
    in_use = ""
    watcher = None
    try:
        watcher = Watcher(settings, api_token=api_token)
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        asyncio.run(_serve(watcher))
    except* DirectoryInUse as group:
        in_use = str(group.exceptions[0])
    except* Exception as group:
        errors = group.exceptions
    if in_use:
        log.error("%s", in_use)
        return EXIT_IN_USE
    if errors:
        log.error("the watcher stopped: %s", "; ".join(str(e) or type(e).__name__ for e in errors))
    code = EXIT_FAILED if errors else EXIT_OK
    if watcher:
        _stopped(watcher, code)
    return code


def _check_config(settings: config.Settings) -> int:
    """The settings are valid: with analysis on, each check's query is tried on Prometheus too."""
    tried = asyncio.run(trial.try_checks(settings))
    if tried.problems:
        print("deployment-watcher: invalid configuration:", file=sys.stderr)
        for problem in tried.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if tried.unreachable:
        print(f"deployment-watcher: note: {tried.unreachable}; the checks' queries were not tried", file=sys.stderr)
    print(config.as_yaml(settings), end="")
    print(state_file_line(settings.storage.directory))
    return EXIT_OK


def state_file_line(setting: str) -> str:
    """Where the state would be kept, resolved as at start-up (nothing created): a YAML comment,
    so that the output stays a configuration file."""
    directory = state_directory(setting)
    where = f"{directory / FILE_NAME}" if directory else "none, nothing is kept across restarts"
    return f"# state file: {where} (storage.directory: {setting})"


async def _serve(watcher: Watcher) -> None:
    try:
        await watcher.run()
    except ShutdownIncomplete:
        # What did not end (a task, a thread) would also hang asyncio.run's cleanup and the
        # interpreter's exit, which wait for every task and thread: only leaving now ends it.
        _stopped(watcher, EXIT_FAILED)
        logging.shutdown()
        os._exit(EXIT_FAILED)


def _stopped(watcher: Watcher, code: int) -> None:
    """The last line: whether the state was saved, and the exit code."""
    level = logging.INFO if code == EXIT_OK and watcher.saver.all_saved() else logging.ERROR
    log.log(level, "stopped: %s; exit %d", watcher.saver.outcome(), code)
