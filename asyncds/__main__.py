"""``python -m asyncds``: the command line lives in :mod:`asyncds.cli`.

Kept to an import inside the guard on purpose: the process pool starts its workers with
``spawn``, which re-imports this module in every worker, and a worker needs none of the CLI's
imports (aiohttp, the pipeline, assembly), only what its jobs import.
"""

if __name__ == "__main__":
    import sys

    from asyncds.cli import main

    sys.exit(main())
