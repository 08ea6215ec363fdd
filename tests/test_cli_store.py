"""``mllp-trio store`` (issue 12): the sending queue shown, peer bytes escaped,
pipes closed early, honest help, several ids exported."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import trio

from mllp_trio.store import InboundRecord, open_sqlite_store

from .hl7_samples import make_message
from .test_cli_support import STEP_TIMEOUT, cli_process, invoke

EVIL = "X\x1b]0;owned\x07\x1b[2J"  # sets the window title, clears the screen


def _fill(path: Path, *, inbound: int = 0, evil: bool = False, dead: bool = False) -> list[int]:
    ids: list[int] = []

    async def commit(store: Any, n: int) -> None:
        control_id = EVIL if evil else f"IN{n}"
        result = await store.commit_inbound(
            InboundRecord(
                data=make_message(control_id=f"IN{n}"),
                peer="127.0.0.1:1",
                control_id=control_id,
                sending_application="APP\x1b[31m" if evil else "APP",
                sending_facility="FAC",
            )
        )
        ids.append(result.message_id)

    async def fill() -> None:
        async with open_sqlite_store(path) as store:
            if inbound <= 3:  # in order: the ids follow the control ids
                for n in range(inbound):
                    await commit(store, n)
            else:  # many at once: the journal commits them in groups
                async with trio.open_nursery() as nursery:
                    for n in range(inbound):
                        nursery.start_soon(commit, store, n)
            if dead:
                qid = await store.enqueue("127.0.0.1:9", make_message(control_id="Q1"))
                await store.mark_dead(qid, "AR refused \x1b[2J")

    trio.run(fill)
    return ids


def test_count_and_list_show_the_sending_queue(tmp_path: Path) -> None:
    _fill(tmp_path / "mllp-outbox", dead=True)
    count = invoke("store", "count", "--store", "mllp-outbox", cwd=tmp_path)
    assert count.code == 0, count.output
    assert count.stdout.splitlines() == [
        "0",
        "outbound queue: 0 pending, 0 delivered, 1 dead letter(s)",
    ]
    listing = invoke("store", "list", "--store", "mllp-outbox", cwd=tmp_path)
    assert listing.code == 0, listing.output
    (line,) = listing.stdout.splitlines()
    fields = line.split("\t")
    assert fields[0] == "out 1" and fields[2] == "127.0.0.1:9" and fields[3] == "Q1"
    assert fields[5].startswith("dead")


def test_list_escapes_control_characters(tmp_path: Path) -> None:
    _fill(tmp_path / "mllp-data", inbound=1, evil=True, dead=True)
    listing = invoke("store", "list", cwd=tmp_path)
    assert listing.code == 0, listing.output
    assert "\x1b" not in listing.stdout and "\x07" not in listing.stdout
    assert "X\\e]0;owned\\x07\\e[2J" in listing.stdout
    assert "APP\\e[31m|FAC" in listing.stdout
    assert "AR refused \\e[2J" in listing.stdout


def test_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # More than a pipe holds (64 KiB): the writer is still writing when the reader leaves.
    _fill(tmp_path / "mllp-data", inbound=1000)
    process = cli_process(
        "store",
        "list",
        "--limit",
        "1000",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()  # like `head -1`: read one line, then leave
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    process.wait(STEP_TIMEOUT)
    assert "Broken pipe" not in stderr and "Errno" not in stderr
    assert "Traceback" not in stderr


def test_help_is_honest_about_content(tmp_path: Path) -> None:
    group = " ".join(invoke("store", "--help", cwd=tmp_path).stdout.split())
    assert "never content" not in group
    assert "export writes message content" in group
    export = " ".join(invoke("store", "export", "--help", cwd=tmp_path).stdout.split())
    assert "content" in export and "patient data" in export


def test_export_several_ids_to_stdout_and_to_files(tmp_path: Path) -> None:
    ids = _fill(tmp_path / "mllp-data", inbound=3)
    both = invoke("store", "export", str(ids[0]), str(ids[2]), cwd=tmp_path)
    assert both.code == 0, both.output
    assert both.stdout.encode() == make_message(control_id="IN0") + make_message(control_id="IN2")
    files = invoke("store", "export", *map(str, ids), "-o", "out", cwd=tmp_path)
    assert files.code == 0, files.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}.hl7" for i in ids]
    assert (tmp_path / "out" / f"{ids[1]}.hl7").read_bytes() == make_message(control_id="IN1")


def test_exported_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    # Regression: under umask 000, `export -o` wrote 0666 files in a 0777 folder.
    ids = _fill(tmp_path / "mllp-data", inbound=1)
    old = os.umask(0)
    try:
        files = invoke("store", "export", str(ids[0]), "-o", "out", cwd=tmp_path)
    finally:
        os.umask(old)
    assert files.code == 0, files.output
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "out" / f"{ids[0]}.hl7").stat().st_mode) == 0o600
