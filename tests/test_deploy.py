"""Deployment: the container's entry point with the container's settings, and the systemd unit.

The image itself is built only when MLLP_TRIO_DOCKER_TEST=1 (building needs
a Docker daemon and the base image): CI never depends on Docker. What the
container runs is tested here all the same: the Dockerfile's ENTRYPOINT
with its ENV (paths moved into a temporary folder, ports chosen free), its
HEALTHCHECK command, a real MLLP exchange over mutual TLS, and shutdown.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import trio

from mllp_trio._cli._listen import listen

from .service_helpers import http_get
from .tls_helpers import make_tls_material

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "mllp-trio.service"
BIN = Path(sys.executable).parent


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def container_env(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_is_small_non_root_foreground_with_volumes_and_healthcheck() -> None:
    steps = final_stage(DOCKERFILE.read_text())
    words = dict(steps)
    assert words["FROM"].endswith("-slim")
    assert words["USER"] not in ("root", "0")
    assert json.loads(words["ENTRYPOINT"]) == ["mllp-trio", "listen"]  # foreground, no shell
    assert set(json.loads(words["VOLUME"])) == {"/certs", "/var/lib/mllp-trio"}
    assert "/healthz" in words["HEALTHCHECK"]
    env = container_env(steps)
    assert env["MLLP_TRIO_LISTEN_STORE"].startswith("/var/lib/mllp-trio/")
    assert all(env[f"MLLP_TRIO_LISTEN_{k}"].startswith("/certs/") for k in ("CERT", "KEY", "CA"))


def healthcheck_argv(steps: list[tuple[str, str]]) -> list[str]:
    (rest,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    return list(json.loads(rest[rest.index("CMD") + 3 :].strip()))


async def read_until(stream: trio.abc.ReceiveStream, *needles: bytes) -> bytes:
    data = b""
    with trio.fail_after(60):  # a guard against a hang, not a measurement
        while not all(n in data for n in needles):
            chunk = await stream.receive_some(4096)
            assert chunk, f"the listener exited early; it printed {data!r}"
            data += chunk
    return data


async def test_container_entry_point_serves_checks_and_stops(tmp_path: Path) -> None:
    steps = final_stage(DOCKERFILE.read_text())
    certs = make_tls_material(tmp_path / "certs")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = dict(os.environ)
    for key, value in container_env(steps).items():
        env[key] = value.replace("/certs", str(certs.directory)).replace(
            "/var/lib/mllp-trio", str(state)
        )
    # Loopback and free ports for the test; everything else as in the image.
    env.update(
        MLLP_TRIO_LISTEN_HOST="127.0.0.1",
        MLLP_TRIO_LISTEN_PORT="0",
        MLLP_TRIO_LISTEN_METRICS="127.0.0.1:0",
    )
    notify_path = tmp_path / "notify"
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(notify_path))
    env["NOTIFY_SOCKET"] = str(notify_path)
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    argv = [str(BIN / entry[0]), *entry[1:]]
    process = await trio.lowlevel.open_process(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        out = await read_until(process.stdout, b"listening on", b"metrics and health on")
        port = int(re.search(rb"listening on 127\.0\.0\.1:(\d+)", out).group(1))  # type: ignore[union-attr]
        metrics = int(re.search(rb"http://127\.0\.0\.1:(\d+)/", out).group(1))  # type: ignore[union-attr]
        assert await notify.recv(100) == b"READY=1"

        # The image's HEALTHCHECK, pointed at the test's port.
        health = [
            sys.executable if arg == "python" else arg.replace("9464", str(metrics))
            for arg in healthcheck_argv(steps)
        ]
        assert (await trio.run_process(health, check=False)).returncode == 0
        assert await http_get(metrics, "/readyz") == (200, "ready\n")

        # A real exchange over mutual TLS, as a probe would run it.
        check = await trio.run_process(
            [
                str(BIN / "mllp-trio"),
                "check",
                f"127.0.0.1:{port}",
                "--cert",
                str(certs.client_cert_file),
                "--key",
                str(certs.client_key_file),
                "--ca",
                str(certs.ca_file),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        assert check.stdout.startswith(b"OK: AA from 127.0.0.1:")

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await process.wait() == 0
        assert await notify.recv(100) == b"STOPPING=1"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        notify.close()
    errors = b""
    while chunk := await process.stderr.receive_some(65536):
        errors += chunk
    # JSON logs (the image's --log-format), one line per message, never content.
    records = [json.loads(line) for line in errors.decode().splitlines()]
    answered = [r for r in records if r.get("event") == "message"]
    assert [(r["ack"], r["message_type"]) for r in answered] == [("AA", "NMQ^N01")]
    assert answered[0]["identity"].startswith("CN=test-client")
    assert answered[0]["listener"] == f"127.0.0.1:{port}"  # port 0 named by the bound port
    journal = state / "journal"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in journal.iterdir()} == {0o600}


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_systemd_unit_uses_existing_flags_notify_and_hardening() -> None:
    service = unit_sections(UNIT.read_text())["Service"]
    argv = shlex.split(service["ExecStart"][0])
    assert Path(argv[0]).name == "mllp-trio" and argv[1] == "listen"
    known = {opt for param in listen.params for opt in getattr(param, "opts", [])}
    flags = [arg for arg in argv[2:] if arg.startswith("--")]
    assert flags and not [f for f in flags if f not in known], "the unit names unknown flags"
    assert "--metrics" in flags and "--retention" in flags
    # Type=notify holds only because the listener sends READY=1 (tested above).
    assert service["Type"] == ["notify"]
    assert service["User"] != ["root"]
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "RestrictAddressFamilies"):
        assert option in service
    assert service["UMask"] == ["0077"]
