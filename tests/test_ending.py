"""The run's ending: outcome, top drop reasons, warnings again, where the dataset is and how
to load it; printed on a terminal or not, and -q keeps only the warnings."""

from __future__ import annotations

from pathlib import Path

from asyncds.cli import EXIT_OK, main
from asyncds.ending import render_ending
from tests.e2e import write_config

SUMMARY = {
    "classes": {
        "cat": {"good": 30, "requested": 30},
        "axolotl": {"good": 4, "requested": 10},
    },
    "totals": {
        "good": 34,
        "requested": 40,
        "train": 27,
        "test": 7,
        "dropped": {"near_duplicate": 5, "http_error": 2, "too_small": 1, "corrupt": 1, "x": 0},
    },
    "warnings": ["axolotl: 4 of 10 — Flickr had no more candidates for tags [axolotl]"],
}


def test_the_ending_names_the_outcome_the_top_reasons_and_the_next_steps():
    ending = render_ending(SUMMARY, Path("outputs/demo"), 12.34, ["old"])
    text = "\n".join(ending.lines)
    assert "done in 12.3 s: 34 of 40 images (cat 30/30, axolotl 4/10)" in text
    assert "dropped 9 (replaced where Flickr had more): near_duplicate 5, http_error 2" in text
    assert "too_small 1, other 1" in text  # past the top three, summed
    assert "dataset: outputs/demo (train 27, test 7)" in text
    assert 'load it: datasets.load_dataset("outputs/demo")' in text
    assert "outputs/demo/report.html in a browser" in text and "summary.txt" in text
    assert ending.warnings[0].startswith("axolotl: 4 of 10")
    assert "old" in ending.warnings[1] and "--prune" in ending.warnings[1]


def test_nothing_dropped_says_so():
    summary = {**SUMMARY, "totals": {**SUMMARY["totals"], "dropped": {"http_error": 0}}}
    assert "dropped: none" in render_ending(summary, Path("o"), 1.0).lines


def test_a_run_ends_with_it_on_stdout_and_q_keeps_only_warnings(tmp_path: Path, capsys):
    out = tmp_path / "o"
    config = write_config(tmp_path / "c.yaml", {"cat": 20})
    assert main([str(config), "--emulator", "--output-dir", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out  # not a terminal here, as under `make demo | tee`
    assert "done in" in printed and "20 of 20 images" in printed
    assert f'datasets.load_dataset("{out.as_posix()}")' in printed
    (out / "stray").mkdir()
    assert main([str(config), "--emulator", "--output-dir", str(out), "-q"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "stray" in captured.err and "--prune" in captured.err
