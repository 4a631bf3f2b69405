"""The command line: ``python -m asyncds config.yaml`` and ``python -m asyncds emulator``
(``asyncds/__main__.py`` only calls :func:`main`).

Exit codes: 0 done, 1 failed (one clear line), 2 bad config or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from asyncds import __version__
from asyncds.config import Config, ConfigError, load_config, parse_export
from asyncds.files import (
    LOCK_FILE,
    OutputDirError,
    OutputLock,
    OutputLocked,
    check_output_dir,
    open_no_follow,
    prune_folders,
    unconfigured_folders,
)
from asyncds.flickr import FlickrAuthError, FlickrError, FlickrUnreachableError, redact
from asyncds.outage import HostUnreachable
from asyncds.pool import WorkerDied
from asyncds.state import STATE_FILE, StateError, damaged_state_message

log = logging.getLogger("asyncds")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

NO_KEY = (
    "API_KEY is not set: export API_KEY=<your Flickr key> (and API_SECRET) — get one at "
    "https://www.flickr.com/services/apps/create/ — or add --emulator to try asyncds offline"
)


class _Redact(logging.Filter):
    """Last line of defence: no log record leaves with a key or signature in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncds",
        usage=(
            "python -m asyncds CONFIG [options]\n"
            "       python -m asyncds plan CONFIG [--emulator]\n"
            "       python -m asyncds emulator [options]"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build an image-classification dataset from Flickr tag searches: search, download,\n"
            "resize, dedup, split, archive. Re-running the same command resumes.\n\n"
            "subcommands:\n"
            "  plan      what a run will take (matches, API calls, time, disk); downloads nothing\n"
            "  emulator  the built-in Flickr emulator alone (python -m asyncds emulator --help)"
        ),
        epilog=(
            "examples:\n"
            "  python -m asyncds examples/demo.yaml --emulator   # try it offline, no key\n"
            "  export API_KEY=... API_SECRET=...\n"
            "  python -m asyncds plan config.yaml && python -m asyncds config.yaml\n\n"
            "Credentials come from API_KEY and API_SECRET; FLICKR_API_URL overrides the API\n"
            "endpoint. Exit codes: 0 done, 1 failed, 2 bad config or usage, 130 interrupted."
        ),
    )
    parser.add_argument("config", type=Path, help="the YAML config (see README: Configuration)")
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="run against the built-in Flickr emulator on loopback: no credentials, no network",
    )
    parser.add_argument(
        "--emulator-faults",
        metavar="all|FILE",
        help="with --emulator: inject Flickr's faults ('all', or a fault-profile YAML file)",
    )
    parser.add_argument(
        "--emulator-seed", type=int, default=0, help="with --emulator: the catalog seed (default 0)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="output folder (default: output_dir from the config, else outputs)",
    )
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="only search: write urls_data.json with up to `count` image URLs per class",
    )
    parser.add_argument(
        "--export",
        metavar="FORMATS",
        help="comma-separated, any of webdataset,parquet,urls: after assembly also write those "
        "shards, or urls.parquet for img2dataset (urls works with --search-only too); overrides "
        "export in the config; needs pip install 'asyncds[export]'",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the folders of classes no longer in the config (ImageFolder would take "
        "them for classes); the summary lists them",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over: delete this config's state, class folders and artifacts first",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display, warnings only"
    )
    parser.set_defaults(pruned=False)  # set by --prune when it deleted something
    parser.add_argument("--version", action="version", version=f"asyncds {__version__}")
    return parser


def setup_logging(*, verbose: bool, quiet: bool) -> None:
    # A log line that cannot be written (a full disk) must not print a traceback over the
    # one-line error the run ends with.
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = console_handler()
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    console.addFilter(_Redact())
    root.addHandler(console)
    for noisy in ("aiohttp.access", "asyncio", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def console_handler() -> logging.Handler:
    """On a terminal, rich's handler on the console the progress display draws on (records
    print above the bars); elsewhere plain ``LEVEL message`` lines."""
    from asyncds.progress import stderr_console, stderr_is_live_terminal

    if stderr_is_live_terminal():  # rich is loaded only for a terminal
        from rich.logging import RichHandler

        return RichHandler(console=stderr_console(), show_time=False, show_path=False, markup=False)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return handler


def log_to_file(out_dir: Path) -> None:
    # Opened here, not by FileHandler: a linked asyncds.log must not append to its target.
    fd = open_no_follow(out_dir / "asyncds.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    stream = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact())
    logging.getLogger().addHandler(handler)


@asynccontextmanager
async def endpoint(config: Config, args: argparse.Namespace) -> AsyncIterator[tuple[Config, str]]:
    """The API to talk to and the key to use: the emulator's, or Flickr's from API_KEY."""
    if not args.emulator:
        yield config, os.environ.get("API_KEY", "")
        return
    from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, FaultProfile, running_emulator

    if args.emulator_faults == "all":
        faults = FaultProfile.all_on()
    elif args.emulator_faults:
        faults = FaultProfile.from_yaml(args.emulator_faults)
    else:
        faults = FaultProfile.none()
    settings = EmulatorSettings(seed=args.emulator_seed, faults=faults)
    async with running_emulator(settings) as emu:
        flickr = dataclasses.replace(config.flickr, api_url=emu.api_url)
        yield dataclasses.replace(config, flickr=flickr), EMULATOR_API_KEY


async def run(args: argparse.Namespace, config: Config, out_dir: Path) -> int:
    from asyncds import job

    async with endpoint(config, args) as (config, api_key):
        if not api_key:
            print(NO_KEY, file=sys.stderr)
            return EXIT_USAGE
        if args.search_only:
            result = await job.search_only(config, api_key=api_key, out_dir=out_dir)
            log.info("wrote %s (%d API calls)", out_dir / "urls_data.json", result.api_calls)
        else:
            result = await job.create_dataset(
                config,
                api_key=api_key,
                out_dir=out_dir,
                quiet=args.quiet,
                reassemble=args.pruned,
            )
            extra = unconfigured_folders(out_dir, (c.name for c in config.classes))
            print_ending(out_dir, result.wall_time_s, extra, quiet=args.quiet)
            return EXIT_OK
        for label, (got, wanted) in result.short.items():
            log.warning("%s: %d of %d — Flickr has no more for its tags", label, got, wanted)
    return EXIT_OK


async def guarded(args: argparse.Namespace, config: Config, out_dir: Path) -> int:
    """Run with SIGINT/SIGTERM turned into a clean cancellation (state flushed, exit 130)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await run(args, config, out_dir)
    except asyncio.CancelledError:
        print(
            f"interrupted: progress is saved in {out_dir}; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # uvloop has no Windows wheel; the stdlib loop works the same
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def build_plan_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncds plan",
        description=(
            "Before a long run: one search call per class, then Flickr's matches, whether each "
            "class will end short, the API calls the run needs and their time at the key's "
            "rate, and the disk it will take. Downloads nothing and writes nothing."
        ),
    )
    parser.add_argument("config", type=Path, help="the YAML config")
    parser.add_argument(
        "--emulator", action="store_true", help="plan against the built-in Flickr emulator"
    )
    parser.add_argument(
        "--emulator-seed", type=int, default=0, help="with --emulator: the catalog seed"
    )
    parser.set_defaults(emulator_faults=None)
    return parser


async def plan(args: argparse.Namespace, config: Config) -> int:
    from asyncds.job import flickr_client
    from asyncds.plan import make_plan, render_plan

    async with endpoint(config, args) as (config, api_key):
        if not api_key:
            print(NO_KEY, file=sys.stderr)
            return EXIT_USAGE
        async with flickr_client(config, api_key=api_key) as client:
            print(render_plan(await make_plan(config, client)), end="")
    return EXIT_OK


def plan_main(argv: list[str]) -> int:
    args = build_plan_parser().parse_args(argv)
    setup_logging(verbose=False, quiet=True)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _runner() as runner:
            return runner.run(plan(args, config))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except FlickrError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from asyncds.emulator.cli import main as emulator_main

        return emulator_main(argv[1:])
    if argv[:1] == ["plan"]:
        return plan_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        config = load_config(args.config)
        if args.export is not None:
            config = dataclasses.replace(config, export=parse_export(args.export))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from asyncds.assembly.exports import missing_libraries

    if problem := missing_libraries(config.export):  # before anything is downloaded
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.emulator_faults and not args.emulator:
        parser.error("--emulator-faults needs --emulator")
    out_dir = args.output_dir or config.output_dir
    try:
        check_output_dir(out_dir, written_names(config))
        if args.fresh:
            from asyncds.job import delete_fresh, fresh_targets

            with OutputLock(out_dir):  # never delete under a run that is still going
                targets = fresh_targets(config, out_dir)
                for path in targets:
                    print(f"--fresh: deleting {path}", file=sys.stderr)
                delete_fresh(targets)
        if args.prune:
            with OutputLock(out_dir):
                extra = unconfigured_folders(out_dir, (c.name for c in config.classes))
                for name in extra:
                    print(f"--prune: deleting {out_dir / name}", file=sys.stderr)
                prune_folders(out_dir, extra)
                args.pruned = bool(extra)
        if not args.search_only:
            log_to_file(out_dir)
    except (OutputLocked, OutputDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {describe_os_error(exc, out_dir)}", file=sys.stderr)
        return EXIT_FAILED
    from asyncds.job import limit_malloc_arenas

    limit_malloc_arenas()  # before the event loop starts any thread
    try:
        with _runner() as runner:
            return runner.run(guarded(args, config, out_dir))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as raised:
        exc = _first_leaf(raised)  # task groups wrap a producer's error in an ExceptionGroup
        if isinstance(exc, FlickrAuthError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED if os.environ.get("API_KEY") or args.emulator else EXIT_USAGE
        if isinstance(exc, FlickrUnreachableError):
            override = "" if args.emulator else os.environ.get("FLICKR_API_URL")
            where = f" or FLICKR_API_URL (set to {override})" if override else ""
            print(f"error: {redact(str(exc))}{where}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(
            exc,
            FlickrError | OutputLocked | OutputDirError | StateError | HostUnreachable | WorkerDied,
        ):
            print(f"error: {redact(str(exc))}", file=sys.stderr)
            return EXIT_FAILED
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            full = OSError(errno.ENOSPC, "No space left on device", str(out_dir / STATE_FILE))
            print(f"error: {describe_os_error(full, out_dir)}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(exc, sqlite3.DatabaseError):
            print(f"error: {damaged_state_message(out_dir / STATE_FILE, exc)}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(exc, OSError) and exc.errno is not None:
            log.debug("failed", exc_info=raised)
            print(f"error: {redact(describe_os_error(exc, out_dir))}", file=sys.stderr)
            return EXIT_FAILED
        # One clear line for the user; the traceback goes to the log file.
        log.debug("unexpected failure", exc_info=raised)
        print(f"error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


def print_ending(
    out_dir: Path, wall_time_s: float, unconfigured: Sequence[str], *, quiet: bool
) -> None:
    """The outcome and what to do next (stdout, terminal or not); the warnings again (stderr).
    ``-q`` keeps only the warnings."""
    import json

    from asyncds.ending import render_ending

    try:
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        ending = render_ending(summary, out_dir, wall_time_s, unconfigured)
    except (OSError, ValueError, KeyError) as exc:  # no summary: say where the dataset is
        log.debug("no ending from summary.json: %s", exc)
        log.info("dataset ready in %s (%.1fs)", out_dir, wall_time_s)
        return
    if not quiet:
        sys.stdout.write("\n".join(ending.lines) + "\n")
        sys.stdout.flush()
    for warning in ending.warnings:
        log.warning("%s", warning)


def written_names(config: Config) -> list[str]:
    """Every entry asyncds writes at the top of the output folder (none may be a link)."""
    from asyncds.assembly.writers.preview import preview_name
    from asyncds.config import OUTPUT_FILE_NAMES

    state = [STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm", f"{STATE_FILE}-journal"]
    previews = [preview_name(c.name) for c in config.classes]
    return [
        LOCK_FILE,
        *state,
        *sorted(OUTPUT_FILE_NAMES),
        *previews,
        *(c.name for c in config.classes),
    ]


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def describe_os_error(exc: OSError, out_dir: Path) -> str:
    """One line for a failed file operation: which file, why, and what to do."""
    where = exc.filename or out_dir
    why = exc.strerror or type(exc).__name__
    if exc.errno in _NO_SPACE:
        return (
            f"cannot write {where}: {why}; free some space on the disk of {out_dir} "
            "and run the same command again to resume (progress is saved)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where}: {why}; fix its permissions or choose another --output-dir"
    return f"{where}: {why}; progress is saved: run the same command again to resume"


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
