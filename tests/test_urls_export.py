"""The ``urls`` export: ``urls.parquet`` in img2dataset's input schema, after an assembly and
with ``--search-only``, and img2dataset itself downloading it (slow: its own virtualenv)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from asyncds.assembly import write_outputs
from asyncds.assembly.writers.urls_parquet import EXTRA_COLUMNS
from tests.test_assemble import STATS, build_state, make_config

pq = pytest.importorskip("pyarrow.parquet")

COLUMNS = ["url", "caption", *EXTRA_COLUMNS]


async def test_urls_parquet_lists_the_dataset_in_img2datasets_schema(tmp_path: Path):
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        rows = await state.rows()
    finally:
        await state.close()
    config = dataclasses.replace(make_config(out), export=("urls",))
    report = write_outputs(rows, config, out, STATS)
    assert out / "urls.parquet" in report.paths
    table = pq.read_table(out / "urls.parquet")
    assert table.column_names == COLUMNS  # no "key": img2dataset refuses it as an extra column
    got = table.to_pylist()
    metadata = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(got) == len(metadata)
    for row, meta in zip(got, metadata, strict=True):  # both by path
        assert row == {
            "url": meta["url"],
            "caption": meta["title"],
            "photo_id": meta["photo_id"],
            "label": meta["label"],
            "license": meta["license"],
            "owner": meta["owner"],
            "photo_page": meta["photo_page"],
        }


async def test_search_only_writes_every_candidate_to_urls_parquet(tmp_path: Path):
    from asyncds import job
    from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, running_emulator
    from tests.test_job import cat_config

    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=3, tag_sizes={"cat": 80})) as emu:
        config = dataclasses.replace(cat_config(emu.api_url, out, 25), export=("urls",))
        await job.search_only(config, api_key=EMULATOR_API_KEY, out_dir=out)
        assert emu.stats.total_image_requests == 0
    urls = json.loads((out / "urls_data.json").read_text())["cat"]
    table = pq.read_table(out / "urls.parquet").to_pylist()
    assert [r["url"] for r in table] == urls and len(urls) == 25
    assert {r["label"] for r in table} == {"cat"}
    assert all(r["photo_page"].endswith("/" + r["photo_id"]) for r in table)
    assert len({r["photo_id"] for r in table}) == 25


# -- img2dataset itself ---------------------------------------------------------------------


def img2dataset_venv() -> Path:
    """img2dataset 1.47's own virtualenv (its pins clash with ours): ASYNCDS_IMG2DATASET_VENV,
    else the benchmark's, else one created under the user's cache folder (CI: from PyPI)."""
    from benchmarks import bench_peers

    chosen = os.environ.get("ASYNCDS_IMG2DATASET_VENV")
    if chosen:
        venv = Path(chosen)
    elif (bench_peers.I2D_VENV / "bin" / "python").exists():
        venv = bench_peers.I2D_VENV
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        venv = cache / "asyncds" / "venv-img2dataset"
    try:
        bench_peers.ensure_img2dataset(venv)  # the benchmark's creation logic: checks the version
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot create img2dataset's virtualenv at {venv} (needs PyPI): {exc}")
    return venv


@pytest.mark.slow
def test_img2dataset_downloads_urls_parquet_and_keeps_the_extra_columns(tmp_path: Path):
    venv = img2dataset_venv()
    import asyncio

    from asyncds import job
    from asyncds.config import ClassSpec
    from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, EmulatorThread
    from tests.test_job import cat_config

    out = tmp_path / "out"
    with EmulatorThread(EmulatorSettings(seed=4, tag_sizes={"cat": 60, "dog": 60})) as emu:
        config = cat_config(emu.api_url, out, 20)
        config = dataclasses.replace(
            config,
            classes=(*config.classes, ClassSpec("dog", 15, ("dog",))),
            export=("urls",),
        )
        asyncio.run(job.search_only(config, api_key=EMULATOR_API_KEY, out_dir=out))
        expected = pq.read_table(out / "urls.parquet").to_pylist()
        assert len(expected) == 35
        i2d = tmp_path / "i2d"
        # The README's command, on one machine: the local multiprocessing distributor.
        cmd = [
            str(venv / "bin" / "img2dataset"),
            f"--url_list={out / 'urls.parquet'}",
            "--input_format=parquet",
            "--url_col=url",
            "--caption_col=caption",
            f"--save_additional_columns={json.dumps(list(EXTRA_COLUMNS))}",
            "--output_format=files",
            f"--output_folder={i2d}",
            "--image_size=240",
            "--resize_mode=keep_ratio_largest",
            "--processes_count=1",
            "--thread_count=8",
            "--number_sample_per_shard=20",
            "--enable_wandb=False",
            "--distributor=multiprocessing",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
        done = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    assert done.returncode == 0, done.stderr[-2000:]
    samples = [json.loads(p.read_text()) for p in sorted(i2d.glob("*/*.json"))]
    ok = [s for s in samples if s.get("status") == "success"]
    assert len(ok) == len(expected), done.stderr[-2000:]
    assert len(list(i2d.glob("*/*.jpg"))) == len(expected)
    by_id = {r["photo_id"]: r for r in expected}
    for sample in ok:
        row = by_id[sample["photo_id"]]
        assert sample["url"] == row["url"] and sample["caption"] == row["caption"]
        for column in EXTRA_COLUMNS:
            assert sample[column] == row[column], column
    assert {s["label"] for s in ok} == {"cat", "dog"}
    stats = [json.loads(p.read_text()) for p in i2d.glob("*_stats.json")]
    assert sum(s["successes"] for s in stats) == len(expected)
