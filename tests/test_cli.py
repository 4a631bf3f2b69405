"""The command line's contract: help, exit codes and one-line errors (fast, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncds.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, EmulatorThread, FaultProfile
from asyncds.emulator.catalog import is_video_id
from asyncds.flickr import MAX_ANSWER_MB
from tests.e2e import write_config


@pytest.fixture
def emulator():
    with EmulatorThread(EmulatorSettings(seed=1, tag_sizes={"cat": 300})) as emu:
        yield emu


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--emulator", "--output-dir", "--fresh", "--search-only", "--quiet", "API_KEY"):
        assert option in out


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("classes:\n  - name: cat\n    count: -5\n")
    assert main([str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "classes[0].count" in err


def test_missing_config_file(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == EXIT_USAGE
    assert "nope.yaml" in capsys.readouterr().err


def test_usage_error_exits_2(tmp_path: Path):
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    with pytest.raises(SystemExit) as exit_:
        main([str(config), "--emulator-faults", "all"])
    assert exit_.value.code == EXIT_USAGE


def test_no_api_key_says_how_to_set_it(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("API_KEY", raising=False)
    config = write_config(tmp_path / "c.yaml", {"cat": 10}, output_dir=str(tmp_path / "o"))
    assert main([str(config), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "export API_KEY" in err and "--emulator" in err


def test_invalid_key_fails_with_one_line_and_never_shows_the_key(
    tmp_path: Path, capsys, monkeypatch, emulator
):
    secret = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("API_KEY", secret)
    monkeypatch.setenv("FLICKR_API_URL", emulator.api_url)
    out = tmp_path / "o"
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Invalid API Key" in err and "API_KEY" in err
    assert secret not in err
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_search_only_writes_urls(tmp_path: Path, monkeypatch, emulator):
    monkeypatch.setenv("API_KEY", "emulator-key")
    monkeypatch.setenv("FLICKR_API_URL", emulator.api_url)
    config = write_config(tmp_path / "c.yaml", {"cat": 120})
    out = tmp_path / "o"
    assert main([str(config), "--search-only", "--output-dir", str(out), "-q"]) == EXIT_OK
    urls = json.loads((out / "urls_data.json").read_text())
    assert len(set(urls["cat"])) == 120
    assert all(u.startswith(emulator.base_url) and u.endswith("_m.jpg") for u in urls["cat"])


def test_emulator_flag_runs_end_to_end_and_fresh_starts_over(tmp_path: Path, capsys):
    out = tmp_path / "o"
    config = write_config(tmp_path / "c.yaml", {"cat": 30, "dog": 20})
    assert main([str(config), "--emulator", "--output-dir", str(out), "-q"]) == EXIT_OK
    for name in ("train_test_split.json", "dataset.tgz", "urls_data.json", "summary.txt"):
        assert (out / name).is_file()
    (out / "unrelated.txt").write_text("mine")
    assert main([str(config), "--emulator", "--output-dir", str(out), "-q", "--fresh"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "--fresh: deleting" in err and str(out / "cat") in err
    assert (out / "unrelated.txt").read_text() == "mine"  # only what asyncds wrote is deleted
    assert len(list((out / "cat").glob("*.jpg"))) == 30


def test_an_endless_api_answer_ends_the_run_with_one_line(tmp_path: Path, capsys):
    profile = tmp_path / "faults.yaml"
    profile.write_text("api_endless: 1.0\n")  # every API answer is an HTTP 200 that never ends
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    out = tmp_path / "o"
    args = [str(config), "--emulator", "--emulator-faults", str(profile), "--output-dir", str(out)]
    assert main([*args, "-q"]) == EXIT_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: ") and "flickr.photos.search" in line, line
    assert f"exceeded {MAX_ANSWER_MB} MB" in line and "gave up after 6 attempts" in line, line
    assert EMULATOR_API_KEY not in line and "Traceback" not in line


def test_searches_ask_for_photos_unless_media_says_otherwise(tmp_path: Path, monkeypatch):
    settings = EmulatorSettings(seed=1, tag_sizes={"cat": 300}, faults=FaultProfile(video=0.1))
    with EmulatorThread(settings) as emu:
        monkeypatch.setenv("API_KEY", "emulator-key")
        monkeypatch.setenv("FLICKR_API_URL", emu.api_url)
        photos = {int(i) for i in emu.catalog.tag_ids("cat")}
        videos = {int(i) for i in emu.catalog.tag_video_ids("cat")}
        assert videos, "the emulator must have videos under this tag for the test to mean much"

        def found(media: str | None) -> set[int]:
            flickr = {} if media is None else {"media": media}
            config = write_config(tmp_path / f"{media}.yaml", {"cat": 1000}, flickr=flickr)
            out = tmp_path / f"out-{media}"
            assert main([str(config), "--search-only", "--output-dir", str(out), "-q"]) == EXIT_OK
            urls = json.loads((out / "urls_data.json").read_text())["cat"]
            return {int(url.rsplit("/", 1)[1].split("_")[0]) for url in urls}

        default = found(None)
        assert default == photos and not any(is_video_id(i) for i in default)
        assert found("all") == photos | videos
        assert found("videos") == videos


def test_an_unreachable_api_host_is_named_with_flickr_api_url(tmp_path: Path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    monkeypatch.setenv("API_KEY", "some-key")
    monkeypatch.setenv("FLICKR_API_URL", f"http://127.0.0.1:{port}/services/rest/")
    config = write_config(tmp_path / "c.yaml", {"cat": 10}, flickr={"retries": 1})
    assert main([str(config), "--output-dir", str(tmp_path / "o"), "-q"]) == EXIT_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"the Flickr API at 127.0.0.1:{port} cannot be reached (connection refused" in lines[0]
    assert "FLICKR_API_URL (set to" in lines[0] and "some-key" not in lines[0]
    assert "Flickr error -1" not in lines[0] and "ClientConnectorError" not in lines[0]


def test_a_rejected_key_says_it_was_rejected_not_unset(
    tmp_path: Path, capsys, monkeypatch, emulator
):
    monkeypatch.setenv("API_KEY", "not-the-emulators-key")
    monkeypatch.setenv("FLICKR_API_URL", emulator.api_url)
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(tmp_path / "o"), "-q"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "rejected the key in API_KEY" in err and "not its secret" in err
    assert "set API_KEY" not in err


def test_every_emulator_option_has_a_help_text():
    from asyncds.emulator.cli import build_parser as emulator_parser

    undocumented = [
        action.option_strings[0]
        for action in emulator_parser()._actions
        if action.option_strings and not action.help
    ]
    assert not undocumented, undocumented


def test_help_names_the_subcommands_and_gives_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert "asyncds plan CONFIG" in usage and "asyncds emulator" in usage
    assert "examples:" in out and "--emulator   # try it offline" in out
