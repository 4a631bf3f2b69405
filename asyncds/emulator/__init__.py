"""A Flickr-compatible server for tests, benchmarks and demos: no network, no credentials.

``async with running_emulator(EmulatorSettings(seed=1)) as emu:`` serves the REST API at
``emu.api_url`` and the images it links to; ``EmulatorThread`` does the same for sync clients.
"""

from .catalog import Catalog, PhotoInfo, SearchQuery
from .faults import FaultProfile
from .server import (
    EMULATOR_API_KEY,
    EMULATOR_API_SECRET,
    EmulatorSettings,
    EmulatorStats,
    EmulatorThread,
    RunningEmulator,
    build_app,
    running_emulator,
)

__all__ = [
    "EMULATOR_API_KEY",
    "EMULATOR_API_SECRET",
    "Catalog",
    "EmulatorSettings",
    "EmulatorStats",
    "EmulatorThread",
    "FaultProfile",
    "PhotoInfo",
    "RunningEmulator",
    "SearchQuery",
    "build_app",
    "running_emulator",
]
