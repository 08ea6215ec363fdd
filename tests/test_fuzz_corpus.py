"""The seed corpus replays clean, and the fuzz runner works without atheris."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from fuzz.run import ROOT, TARGET_NAMES, load_corpus, replay, run_plain
from fuzz.seeds import seeds
from fuzz.targets import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_corpus_replays_clean(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)
    corpus = load_corpus(name)
    # The files on disk are the ones fuzz/seeds.py writes (regenerated, not edited).
    assert sorted(corpus) == sorted(seeds()[name])
    assert replay(TARGETS[name], corpus) == []


def test_plain_mutation_run_counts_inputs_and_keeps_crashes() -> None:
    def fragile(data: bytes) -> None:
        if b"\x1c" in data:
            raise ValueError("found 1 end byte")

    result = run_plain(fragile, [b"MSH|"], seconds=30, seed=1, max_inputs=2000)
    assert result.inputs >= 2000
    assert result.crash_count > 0
    [(signature, data)] = result.crashes.items()
    assert signature.startswith("ValueError at test_fuzz_corpus.py:") and "N end byte" in signature
    assert b"\x1c" in data


def test_runner_refuses_an_unknown_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fuzz", "nonsense", "--replay"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "TARGET must be one of" in done.stderr and "Traceback" not in done.stderr


def test_runner_knows_every_target() -> None:
    assert tuple(TARGETS) == TARGET_NAMES
