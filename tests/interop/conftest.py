"""Fixtures for the mcpgate interop tests.

- `pki`: a throwaway PKI made with `cryptography` on every run (server CA + server
  certificate, client CA + client certificate, and an unrelated "other" CA + client
  certificate), as PEM files in a tmp dir.
- `fastmcp_https`: a factory that starts a FastMCP server (official SDK) over HTTPS with
  uvicorn on 127.0.0.1 (Streamable HTTP at /mcp or legacy SSE at /sse, optionally requiring
  client certificates), waits until its port accepts connections and returns a
  `RemoteServer`; every server it started is terminated at teardown.
- `mcpgate`: a factory that starts the mcpgate binary with a YAML config written to
  tmp, waits for `listening on <URL>` on its stdout and returns the base URL; every
  process it started is terminated (SIGTERM, then SIGKILL) at teardown.

Set up the Python side with `scripts/python-env.sh`; build the binary with
`cargo build` (or point MCPGATE_BIN at one).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INTEROP_DIR = Path(__file__).resolve().parent
FASTMCP_STDIO_SERVER = INTEROP_DIR / "servers" / "fastmcp_stdio.py"
FASTMCP_HTTPS_SERVER = INTEROP_DIR / "servers" / "fastmcp_https.py"

STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 10.0
LISTENING_RE = re.compile(r"listening on (https?://\S+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# The SDK (and the other harness dependencies) are imported here only to find out
# whether they are there: if not, every test FAILS (never skips, never just errors in
# setup) with the reason, from the call phase below.
try:
    import cryptography  # noqa: F401
    import httpx  # noqa: F401
    import mcp  # noqa: F401
    import uvicorn  # noqa: F401  (serves the remote FastMCP server of test_connect_bridge)

    IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - environment problem
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    if IMPORT_ERROR is not None:
        pytest.fail(
            f"the interop test dependencies (official Python MCP SDK `mcp`, httpx, cryptography, "
            f"uvicorn) "
            f"cannot be imported ({IMPORT_ERROR}) with {sys.executable}; run "
            f"scripts/python-env.sh and use .venv/bin/pytest",
            pytrace=False,
        )


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    dir: Path
    server_ca: Path  # CA that signed the server certificate (clients trust this)
    server: CertFiles  # localhost, 127.0.0.1, ::1
    client_ca: Path  # CA the gateway trusts for client certificates
    client: CertFiles  # signed by client_ca
    other_ca: Path  # an unrelated CA
    other_client: CertFiles  # signed by other_ca (must be rejected)


def _make_pki(directory: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)
    serial = iter(range(1000, 2000))

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mcpgate interop tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def write_cert(cert: x509.Certificate, path: Path) -> None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def make_ca(cn: str, stem: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = name(cn)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(next(serial))
            .not_valid_before(not_before)
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{stem}.crt"
        write_cert(cert, path)
        write_key(key, directory / f"{stem}.key")
        return cert, key, path

    def make_leaf(
        cn: str,
        stem: str,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        eku: list,
        sans: list,
    ) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(next(serial))
            .not_valid_before(not_before)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                ),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        files = CertFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
        write_cert(cert, files.cert)
        write_key(key, files.key)
        return files

    server_ca_cert, server_ca_key, server_ca = make_ca("mcpgate test server CA", "server-ca")
    server = make_leaf(
        "localhost",
        "server",
        server_ca_cert,
        server_ca_key,
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    client_ca_cert, client_ca_key, client_ca = make_ca("mcpgate test client CA", "client-ca")
    client = make_leaf(
        "interop-client", "client", client_ca_cert, client_ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH], []
    )
    other_ca_cert, other_ca_key, other_ca = make_ca("mcpgate test OTHER CA", "other-ca")
    other_client = make_leaf(
        "interop-other-client",
        "other-client",
        other_ca_cert,
        other_ca_key,
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        [],
    )
    return Pki(
        dir=directory,
        server_ca=server_ca,
        server=server,
        client_ca=client_ca,
        client=client,
        other_ca=other_ca,
        other_client=other_client,
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki | None:
    if IMPORT_ERROR is not None:
        return None  # the test fails in its call phase, with the reason
    return _make_pki(tmp_path_factory.mktemp("pki"))


# --------------------------------------------------------------------------- config


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "null"
    # A JSON string literal is a valid YAML double-quoted scalar.
    return json.dumps(str(value))


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for nested dicts/lists of plain scalars."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            elif isinstance(item, list):
                flow = ", ".join(_yaml_scalar(v) for v in item)
                lines.append(f"{pad}{key}: [{flow}]")
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item)}")
        return "\n".join(lines)
    raise TypeError(f"top-level YAML value must be a mapping, got {type(value).__name__}")


def mcpgate_binary() -> Path:
    return Path(os.environ.get("MCPGATE_BIN") or REPO_ROOT / "target" / "debug" / "mcpgate")


_config_args_cache: dict[str, list[str]] = {}


def serve_config_args(binary: Path, config_path: Path) -> list[str]:
    """How `mcpgate serve` takes its config file: `--config FILE` (expected), else
    `-c FILE`, else a positional FILE; read from `mcpgate serve --help`."""
    key = str(binary)
    if key not in _config_args_cache:
        try:
            help_text = subprocess.run(
                [key, "serve", "--help"], capture_output=True, text=True, timeout=20
            ).stdout
        except (OSError, subprocess.SubprocessError):
            help_text = ""
        if "--config" in help_text or not help_text:
            _config_args_cache[key] = ["--config"]
        elif re.search(r"(^|\s)-c[,\s]", help_text):
            _config_args_cache[key] = ["-c"]
        else:
            _config_args_cache[key] = []
    return [*_config_args_cache[key], str(config_path)]


def stdio_upstream(command: str | os.PathLike, args: list[str]) -> dict:
    return {"upstream": {"transport": "stdio", "command": str(command), "args": [str(a) for a in args]}}


def fastmcp_upstream() -> dict:
    """The FastMCP stdio server, run by this venv's Python (which has `mcp`)."""
    return stdio_upstream(sys.executable, [str(FASTMCP_STDIO_SERVER)])


def demo_upstream() -> dict:
    """mcpgate's own built-in demo server (`mcpgate demo-server`)."""
    return stdio_upstream(mcpgate_binary(), ["demo-server"])


def gateway_config(
    pki: Pki,
    mcp_servers: dict,
    *,
    mtls: bool = False,
    bearer_env: str | None = None,
) -> dict:
    tls: dict[str, Any] = {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key)}
    if mtls:
        tls["client_ca_file"] = str(pki.client_ca)
        tls["client_auth"] = "verify"
    config: dict[str, Any] = {"server": {"listen": "127.0.0.1:0"}, "tls": tls}
    if bearer_env:
        config["auth"] = {"type": "bearer", "bearer": {"tokens": ["${" + bearer_env + "}"]}}
    config["mcp_servers"] = mcp_servers
    return config


# --------------------------------------------------------------------------- process


class _Gateway:
    def __init__(self, proc: subprocess.Popen, stderr_path: Path, config_path: Path):
        self.proc = proc
        self.stderr_path = stderr_path
        self.config_path = config_path
        self.stdout_lines: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        # Keeps draining after the URL is found, so the gateway never blocks on a full pipe.
        for raw in iter(self.proc.stdout.readline, b""):
            line = ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
            self.stdout_lines.append(line)
            if self.url is None:
                match = LISTENING_RE.search(line)
                if match:
                    self.url = match.group(1).rstrip("/")
                    self._found.set()
        self._found.set()  # EOF: stop waiting

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def output(self, limit: int = 6000) -> str:
        def tail(text: str) -> str:
            return text if len(text) <= limit else "...\n" + text[-limit:]

        return (
            f"config: {self.config_path}\n"
            f"--- config ---\n{self.config_path.read_text()}\n"
            f"--- stdout ---\n{tail(chr(10).join(self.stdout_lines))}\n"
            f"--- stderr ---\n{tail(self.stderr_text())}"
        )

    def wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._found.wait(0.1) and self.url is not None:
                return self.url
            if self.proc.poll() is not None:
                self._reader.join(2)
                if self.url is not None:
                    return self.url
                pytest.fail(
                    f"mcpgate exited with code {self.proc.returncode} before printing "
                    f"'listening on <URL>' on stdout\n{self.output()}",
                    pytrace=False,
                )
        pytest.fail(
            f"mcpgate did not print a line matching {LISTENING_RE.pattern!r} on stdout within "
            f"{timeout:.0f} s\n{self.output()}",
            pytrace=False,
        )

    def stop(self) -> tuple[int | None, bool]:
        """SIGTERM, then SIGKILL; returns (exit code, whether SIGKILL was needed)."""
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                try:
                    self.proc.wait(SHUTDOWN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
        # Upstream children (stdio servers) live in the gateway's own process group,
        # which was created for it: clean up anything left in that group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reader.join(2)
        return self.proc.poll(), killed


@pytest.fixture
def mcpgate(tmp_path: Path) -> Callable[..., str]:
    """Factory: mcpgate(config: dict, env: dict | None = None) -> base URL.

    Writes `config` as YAML, runs `mcpgate serve --config <file>`, waits for
    `listening on <URL>` on stdout (20 s) and returns the URL, e.g.
    `https://127.0.0.1:40123`. Extra `env` entries are added to the process
    environment (for `${VAR}` expansion in the config).
    """
    started: list[_Gateway] = []

    def start(config: dict, env: dict[str, str] | None = None) -> str:
        binary = mcpgate_binary()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            pytest.fail(
                f"mcpgate binary not found at {binary}: run `cargo build` in {REPO_ROOT} "
                f"(or set MCPGATE_BIN to the binary)",
                pytrace=False,
            )
        index = len(started)
        config_path = tmp_path / f"mcpgate-{index}.yaml"
        config_path.write_text(to_yaml(config) + "\n")
        stderr_path = tmp_path / f"mcpgate-{index}.stderr"
        proc_env = dict(os.environ)
        proc_env.update(env or {})
        with open(stderr_path, "wb") as stderr_file:
            proc = subprocess.Popen(
                [str(binary), "serve", *serve_config_args(binary, config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                env=proc_env,
                cwd=tmp_path,
                start_new_session=True,
            )
        gateway = _Gateway(proc, stderr_path, config_path)
        started.append(gateway)
        return gateway.wait_listening(STARTUP_TIMEOUT_S)

    yield start

    problems = []
    for gateway in started:
        code, killed = gateway.stop()
        if code is None:
            problems.append(f"mcpgate (pid {gateway.proc.pid}) did not exit after SIGTERM and SIGKILL")
        elif killed:
            import warnings

            warnings.warn(
                f"mcpgate (pid {gateway.proc.pid}) ignored SIGTERM for {SHUTDOWN_TIMEOUT_S:.0f} s "
                f"and was killed"
            )
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------------------- remote FastMCP over HTTPS


@dataclass
class RemoteServer:
    """A FastMCP server served over HTTPS by uvicorn (servers/fastmcp_https.py)."""

    proc: subprocess.Popen
    transport: str  # "streamable-http" | "sse"
    base_url: str  # https://127.0.0.1:<port>
    log_path: Path  # uvicorn's stdout + stderr
    mtls: bool

    @property
    def endpoint(self) -> str:
        """The MCP endpoint: <base>/mcp (Streamable HTTP) or <base>/sse (legacy SSE)."""
        return self.base_url + ("/mcp" if self.transport == "streamable-http" else "/sse")

    def log(self, limit: int = 4000) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(SHUTDOWN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: nothing may outlive it
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.poll()


def _wait_port_file(proc: subprocess.Popen, port_file: Path, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        try:
            text = port_file.read_text().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def _wait_accepting(proc: subprocess.Popen, port: int, deadline: float) -> bool:
    """Polls 127.0.0.1:<port> with plain TCP connects until one succeeds (bounded)."""
    import socket

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def fastmcp_https(pki: Pki | None, tmp_path: Path) -> Callable[..., RemoteServer]:
    """Factory: fastmcp_https(transport="streamable-http"|"sse", mtls=False) -> RemoteServer.

    Serves the FastMCP server (tools echo, add) with the test server certificate (signed by
    `pki.server_ca`; SANs localhost, 127.0.0.1, ::1). With `mtls=True`, uvicorn requires a
    client certificate signed by `pki.client_ca` (ssl.CERT_REQUIRED).
    """
    started: list[RemoteServer] = []

    def start(transport: str = "streamable-http", mtls: bool = False) -> RemoteServer:
        assert pki is not None
        assert transport in ("streamable-http", "sse"), transport
        index = len(started)
        port_file = tmp_path / f"fastmcp-https-{index}.port"
        log_path = tmp_path / f"fastmcp-https-{index}.log"
        cmd = [
            sys.executable,
            str(FASTMCP_HTTPS_SERVER),
            "--transport",
            transport,
            "--cert",
            str(pki.server.cert),
            "--key",
            str(pki.server.key),
            "--port-file",
            str(port_file),
        ]
        if mtls:
            cmd += ["--client-ca", str(pki.client_ca)]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
                start_new_session=True,
            )
        server = RemoteServer(proc=proc, transport=transport, base_url="", log_path=log_path, mtls=mtls)
        started.append(server)

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        port = _wait_port_file(proc, port_file, deadline)
        if port is None or not _wait_accepting(proc, port, deadline):
            state = (
                f"exited with code {proc.returncode}"
                if proc.poll() is not None
                else f"not accepting connections after {STARTUP_TIMEOUT_S:.0f} s"
            )
            pytest.fail(
                f"the FastMCP HTTPS server ({transport}, mtls={mtls}) {state}\n"
                f"command: {' '.join(cmd)}\n--- log ---\n{server.log()}",
                pytrace=False,
            )
        server.base_url = f"https://127.0.0.1:{port}"
        return server

    yield start

    leftovers = [s.proc.pid for s in started if s.stop() is None]
    assert not leftovers, f"FastMCP HTTPS server(s) {leftovers} did not exit after SIGTERM and SIGKILL"
