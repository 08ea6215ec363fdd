"""``mllp-trio batch watch``, ``batch put`` and the listener's sink flags, run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from mllp_trio._cli import run

from .hl7_samples import make_message


def batch(*ids: str, count: int | None = None) -> bytes:
    body = b"".join(make_message(control_id=i) for i in ids)
    return b"BHS|^~\\&|LAB|HOSP\r" + body + b"BTS|%d\r" % (len(ids) if count is None else count)


def test_put_then_watch_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "lab.hl7"
    source.write_bytes(batch("W1", "W2"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    assert run(["batch", "put", str(source), str(inbox)]) == 0
    assert capsys.readouterr().out.strip() == str(inbox / "lab.hl7")
    args = ["batch", "watch", str(inbox), "--once", "--stable-seconds", "0"]
    assert run([*args, "--store", str(tmp_path / "j")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("done  lab.hl7: 2 message(s) -> ")
    assert "1 file(s) done, 0 to error/, 0 deferred; 2 message(s) processed (0 refused)" in err
    assert (inbox / "done" / "lab.hl7.ack").read_bytes().count(b"MSA|AA|") == 2


def test_watch_exits_1_when_a_file_goes_to_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.hl7").write_bytes(batch("B1", count=3))
    args = ["batch", "watch", str(inbox), "--once", "--stable-seconds", "0", "-q"]
    assert run([*args, "--store", str(tmp_path / "j")]) == 1
    assert "1 to error/" in capsys.readouterr().err
    assert "BTS-1" in (inbox / "error" / "bad.hl7.error").read_text()


def test_put_refuses_a_malformed_file_and_an_existing_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "drop"
    target.mkdir()
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(batch("B1", count=2))
    assert run(["batch", "put", str(bad), str(target)]) == 1
    assert "BTS" in capsys.readouterr().err and list(target.iterdir()) == []
    good = tmp_path / "good.hl7"
    good.write_bytes(batch("G1"))
    assert run(["batch", "put", str(good), str(target)]) == 0
    assert run(["batch", "put", str(good), str(target)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert run(["batch", "put", str(good), str(target), "--replace"]) == 0


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["batch", "watch", "in", "--done-marker", "a/b"], "--done-marker"),
        (["batch", "watch", "in", "--stable-seconds", "-1"], "--stable-seconds"),
        (["batch", "watch", "in", "--ack-mode", "most"], "--ack-mode"),
        (["batch", "put", "x", "y", "--name", ".hidden"], "--name"),
        (["listen", "--no-store", "--batch-sink", "out"], "--batch-sink"),
        (["listen", "--no-store", "--write-dir", "out"], "--write-dir"),
        (["listen", "--batch-sink-max-messages", "0"], "--batch-sink-max-messages"),
    ],
)
def test_bad_flags_are_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    flag: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_bytes(batch("X1"))
    (tmp_path / "y").mkdir()
    assert run(args) in (1, 2)
    assert flag in capsys.readouterr().err


def test_watch_refuses_a_missing_inbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Regression: a mistyped inbox was created and watched for ever, exit 0.
    assert run(["batch", "watch", str(tmp_path / "nodir"), "--once"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nodir").exists()
