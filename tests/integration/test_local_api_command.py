"""``kpi-sentinel local-api``: the local stack and operator API kept up for a person at a terminal.

The command runs in its own process on a free port, as a person would start it; the test waits for
the URL it prints, uses the operator CLI against it as the printed instructions say (only
``KPI_SENTINEL_API`` set: unsigned requests to 127.0.0.1, taken as the granted principal), and stops
it with Ctrl-C (SIGINT) or SIGTERM, expecting a clean exit.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from kpi_sentinel import cli

ROOT = Path(__file__).resolve().parents[2]
PRINCIPAL = "arn:aws:iam::123456789012:user/terminal-operator"
STARTUP_SECONDS = 180  # the stack is created from template.yaml (moto, cfn-lint): seconds, slower on CI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Running:
    """The ``local-api`` process and every line it printed so far (read in a thread: never blocks)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "POWERTOOLS_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kpi_sentinel.cli", "local-api", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The rest of the first line starting with ``prefix``; fails when the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        pytest.fail(f"no {prefix!r} line within {timeout:.0f}s; output so far:\n" + "\n".join(self.lines))

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        self.wait_for("stopped.", timeout=5)
        return code


@pytest.fixture
def local_api() -> Iterator[tuple[Running, int]]:
    port = free_port()
    running = Running("--port", str(port), "--principal", PRINCIPAL, "--integrations", "acme-ads,globex-shop")
    try:
        yield running, port
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=10)


def operator_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("KPI_SENTINEL_API", url)  # exactly as the printed instructions say
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_local_api_serves_the_operator_cli_until_ctrl_c(
    local_api: tuple[Running, int], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, port = local_api
    url = running.wait_for("operator API:", timeout=STARTUP_SECONDS)
    assert url == f"http://127.0.0.1:{port}"
    running.wait_for("Ctrl-C stops", timeout=10)
    printed = "\n".join(running.lines)
    assert f"export KPI_SENTINEL_API={url}" in printed
    assert f"caller: {PRINCIPAL}" in printed

    code, out, err = operator_cli(capsys, monkeypatch, url, "whoami", "--json")
    assert code == 0, err
    assert json.loads(out) == {"who": PRINCIPAL, "source": "iam", "integrations": ["acme-ads", "globex-shop"]}

    code, out, err = operator_cli(
        capsys, monkeypatch, url, "snooze", "create", "acme-ads", "--metric", "ngr", "--for", "2h",
        "--reason", "migration", "--json",
    )  # fmt: skip
    assert code == 0, err
    snooze = json.loads(out)
    assert snooze["who"] == PRINCIPAL
    code, out, err = operator_cli(capsys, monkeypatch, url, "snooze", "list", "acme-ads")
    assert code == 0, err
    assert snooze["snooze_id"] in out
    assert "metric=ngr" in out

    # Outside the granted scope: refused, as the deployed API would
    code, out, err = operator_cli(capsys, monkeypatch, url, "snooze", "list", "initech")
    assert code == 1
    assert "HTTP 403" in err

    assert running.stop(signal.SIGINT) == 0
    assert running.lines[-2:] == ["stopping ...", "stopped."]


def test_local_api_stops_cleanly_on_sigterm(local_api: tuple[Running, int]) -> None:
    running, _ = local_api
    running.wait_for("operator API:", timeout=STARTUP_SECONDS)
    assert running.stop(signal.SIGTERM) == 0


def test_local_api_refuses_a_port_in_use_before_starting_the_stack() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "kpi_sentinel.cli", "local-api", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "starting the local stack" not in result.stdout
