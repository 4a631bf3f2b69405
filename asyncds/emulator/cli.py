"""``python -m asyncds emulator``: serve the Flickr emulator until SIGINT/SIGTERM.

Also runnable on its own as ``python -m asyncds.emulator.cli --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from .faults import FAULT_HELP, FaultProfile
from .server import EMULATOR_API_KEY, EMULATOR_API_SECRET, EmulatorSettings, running_emulator

log = logging.getLogger("asyncds.emulator")

_INT_FAULTS = frozenset({"rate_limit_per_hour", "retry_after_s"})


def _tag_size(text: str) -> tuple[str, int]:
    tag, sep, count = text.partition("=")
    if not sep or not tag.strip():
        raise argparse.ArgumentTypeError(f"expected TAG=N, got {text!r}")
    try:
        n = int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TAG=N with an integer N, got {text!r}"
        ) from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"tag size must be >= 0, got {text!r}")
    return tag.strip(), n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncds emulator",
        description="Serve a Flickr-compatible REST API and image CDN on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind; 0 = any free port")
    parser.add_argument("--seed", type=int, default=0, help="catalog and fault seed")
    parser.add_argument("--profile", metavar="FAULTS.YAML", help="fault profile (name: rate)")
    parser.add_argument(
        "--all-faults", action="store_true", help="start from FaultProfile.all_on()"
    )
    parser.add_argument(
        "--tag-size",
        metavar="TAG=N",
        type=_tag_size,
        nargs="+",
        action="extend",
        default=[],
        help="how many photos a tag has (several per flag, flag repeatable)",
    )
    parser.add_argument(
        "--default-tag-size",
        type=int,
        default=6000,
        metavar="N",
        help="how many photos any other tag has (default 6000)",
    )
    parser.add_argument(
        "--shared-fraction",
        type=float,
        default=0.01,
        metavar="F",
        help="share of a tag's photos that also carry another tag (default 0.01)",
    )
    parser.add_argument(
        "--page-duplicate-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="rate of search pages that repeat a photo of an earlier page (default 0)",
    )
    parser.add_argument(
        "--api-key",
        default=EMULATOR_API_KEY,
        help=f"the key the emulator accepts (default {EMULATOR_API_KEY})",
    )
    parser.add_argument(
        "--api-secret",
        default=EMULATOR_API_SECRET,
        help="the secret it accepts for OAuth-signed calls (default: the emulator's own)",
    )
    faults = parser.add_argument_group("faults (override the profile)")
    for name in FaultProfile.names():
        faults.add_argument(
            "--" + name.replace("_", "-"),
            "--" + name,
            dest=f"fault_{name}",
            type=int if name in _INT_FAULTS else float,
            metavar="N" if name in _INT_FAULTS else "VALUE",
            default=None,
            help=FAULT_HELP[name],
        )
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """Emulator settings from parsed arguments; raises ValueError on bad values."""
    if args.all_faults:
        profile = FaultProfile.all_on()
    elif args.profile:
        profile = FaultProfile.from_yaml(args.profile)
    else:
        profile = FaultProfile.none()
    overrides = {
        name: getattr(args, f"fault_{name}")
        for name in FaultProfile.names()
        if getattr(args, f"fault_{name}") is not None
    }
    if args.all_faults and args.profile:
        overrides = {**FaultProfile.from_yaml(args.profile).to_dict(), **overrides}
    return EmulatorSettings(
        seed=args.seed,
        tag_sizes=dict(args.tag_size),
        default_tag_size=args.default_tag_size,
        shared_fraction=args.shared_fraction,
        page_duplicate_rate=args.page_duplicate_rate,
        api_key=args.api_key,
        api_secret=args.api_secret,
        faults=profile.replace(**overrides),
    )


async def serve(settings: EmulatorSettings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running_emulator(settings, host, port) as emu:
        settings_only = ("retry_after_s", "stall_s")  # shape faults, inject nothing themselves
        active = {
            k: v for k, v in settings.faults.to_dict().items() if v and k not in settings_only
        }
        log.info("faults: %s", active or "none")
        log.info("FLICKR_API_URL=%s API_KEY=%s", emu.api_url, settings.api_key)
        await stop.wait()
        log.info("stopping; stats: %s", emu.stats.snapshot())


def main(argv: Sequence[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse already said why
        return int(exc.code or 0)
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError) as exc:
        log.error("emulator: %s", exc)
        return 2
    try:
        asyncio.run(serve(settings, args.host, args.port))
    except OSError as exc:
        log.error("emulator: cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
