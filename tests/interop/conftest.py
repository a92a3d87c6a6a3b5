"""Fixtures for the interop suite: a real `confab serve` on ephemeral ports.

The binary comes from `$CONFAB_BIN`, else `$CARGO_TARGET_DIR/debug/confab`, else
`target/debug/confab` under the repository root. Each test gets a fresh data directory, so
tests never see each other's accounts, rosters or offline messages.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "localhost"
# Accounts every server fixture starts with, as (username, password).
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

C2S_LINE = re.compile(r"^confab: c2s listening on (?P<host>[^\s]+):(?P<port>\d+)\s*$")
DIRECT_TLS_LINE = re.compile(
    r"^confab: c2s direct TLS listening on (?P<host>[^\s]+):(?P<port>\d+)\s*$"
)
HTTP_LINE = re.compile(r"^confab: http listening on (?P<host>[^\s]+):(?P<port>\d+)\s*$")


def confab_bin() -> Path:
    """Where the server binary is, or fail the test run with a clear message."""
    candidates: list[Path] = []
    if os.environ.get("CONFAB_BIN"):
        candidates.append(Path(os.environ["CONFAB_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        target = Path(os.environ["CARGO_TARGET_DIR"])
        if not target.is_absolute():
            target = REPO_ROOT / target
        candidates.append(target / "debug" / "confab")
    candidates.append(REPO_ROOT / "target" / "debug" / "confab")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        if os.environ.get("CONFAB_BIN") and candidate == Path(os.environ["CONFAB_BIN"]):
            # An explicit CONFAB_BIN that does not exist is a configuration error, not
            # something to paper over with another binary.
            break
    pytest.fail(
        "confab binary not found (tried: "
        + ", ".join(str(c) for c in candidates)
        + "); run `cargo build -p confab` or set CONFAB_BIN",
        pytrace=False,
    )


@dataclass
class Server:
    """A running `confab serve` and what a client needs to reach it."""

    binary: Path
    data_dir: Path
    host: str = ""
    port: int = 0
    http_port: int = 0
    # The XEP-0368 direct TLS listener (0 when disabled).
    direct_tls_port: int = 0
    process: subprocess.Popen | None = None
    stdout_lines: list[str] = field(default_factory=list)
    stderr_path: Path | None = None
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return DOMAIN

    @property
    def cert(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def jid(self, user: str) -> str:
        return f"{user}@{DOMAIN}"

    def password(self, user: str) -> str:
        return self.passwords[user]

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Runs `confab ARGS --data-dir DIR` and fails the test if it fails."""
        result = subprocess.run(
            [str(self.binary), *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            pytest.fail(
                f"confab {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}",
                pytrace=False,
            )
        return result

    def add_user(self, user: str, password: str) -> None:
        self.cli("user", "add", self.jid(user), password)
        self.passwords[user] = password

    def start(self, *extra: str) -> None:
        self.stderr_path = self.data_dir / "serve.stderr.log"
        stderr = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        # Its default is the fixed port 5223; every test server needs its own.
        env.setdefault("CONFAB__C2S__DIRECT_TLS_LISTEN", "127.0.0.1:0")
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--c2s",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        stderr.close()
        ready = threading.Event()

        def pump() -> None:
            # Reads stdout for the life of the process so the pipe never fills up.
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.stdout_lines.append(line.rstrip("\n"))
                if (m := C2S_LINE.match(line)) is not None:
                    self.host, self.port = m["host"], int(m["port"])
                elif (m := DIRECT_TLS_LINE.match(line)) is not None:
                    self.direct_tls_port = int(m["port"])
                elif (m := HTTP_LINE.match(line)) is not None:
                    self.http_port = int(m["port"])
                if self.port and self.http_port:
                    ready.set()
            ready.set()  # EOF: the process exited; start() reports it below.

        threading.Thread(target=pump, name="confab-stdout", daemon=True).start()
        if not ready.wait(STARTUP_TIMEOUT) or not (self.port and self.http_port):
            self.stop()
            pytest.fail(
                "confab serve did not report its listeners within "
                f"{STARTUP_TIMEOUT}s (exit code {self.process.returncode})\n"
                f"stdout: {self.stdout_lines}\nstderr:\n{self.stderr_tail()}",
                pytrace=False,
            )
        assert self.cert.is_file(), f"no self-signed certificate at {self.cert}"

    def stderr_tail(self, lines: int = 40) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def _start_server(tmp_path: Path, *extra: str) -> Server:
    server = Server(binary=confab_bin(), data_dir=tmp_path / "confab-data")
    server.data_dir.mkdir()
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start(*extra)
    return server


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest):
    """A server with alice, bob and carol, registration closed (the default)."""
    srv = _start_server(tmp_path)
    yield srv
    srv.stop()
    _report_server_log(request, srv)


@pytest.fixture
def open_server(tmp_path: Path, request: pytest.FixtureRequest):
    """A server with alice, bob and carol and `--registration open`."""
    srv = _start_server(tmp_path, "--registration", "open")
    yield srv
    srv.stop()
    _report_server_log(request, srv)


def _report_server_log(request: pytest.FixtureRequest, srv: Server) -> None:
    # On failure, the server's side of the story ends up in the report next to slixmpp's log.
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        request.node.add_report_section("call", "confab stderr", srv.stderr_tail(200))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


def pytest_report_header(config):
    try:
        return f"confab binary: {confab_bin()}"
    except BaseException:  # pytest.fail outside a test raises Failed.
        return "confab binary: NOT FOUND"
