"""nginx in front of the service, as docs/DEPLOYMENT.md's reference set-up: for the reverse-proxy tests.

nginx (Debian's package; ``.ci/run`` installs it) runs as a subprocess of the test, not a daemon,
with a config generated into the test's tmp directory, on a free loopback port, stopped by PID. A
missing nginx skips the test, or fails it in CI (``CI`` set), like tests/telemetry/browser.py.
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.servers import free_port, stop

NGINX = "/usr/sbin/nginx"
# The reference config of docs/DEPLOYMENT.md ("Reverse proxy"), with the test's paths, ports and
# shorter timeouts. {proxy_address}: the address nginx connects to the service from (the one the
# service trusts with FORWARDED_ALLOW_IPS); {scheme}: what it tells the service the client used
# (a TLS-terminating proxy says https).
CONFIG = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server_tokens off;

    client_header_timeout {header_timeout}s;  # a request's headers must arrive within this
    client_body_timeout {body_timeout}s;      # and each read of its body
    client_max_body_size {max_body};          # = MAX_BODY_BYTES: 413 before the service sees it
    send_timeout 30s;
    keepalive_timeout 65s;

    upstream dspy_django {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        error_page 413 = @too_large;
        location @too_large {{
            default_type application/json;
            return 413 '{{"detail": "Request body is larger than {max_body} bytes"}}';
        }}
        location / {{
            proxy_pass http://dspy_django;
            proxy_bind {proxy_address};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;  # replaces the client's own
            proxy_set_header X-Forwarded-Proto {scheme};
            proxy_request_buffering on;  # the whole body first: a slow client never holds a worker
            proxy_buffering off;         # /stream's events as they come
            proxy_read_timeout 150s;
        }}
    }}
}}
"""


def nginx_or_skip() -> str:
    if shutil.which(NGINX) is None and not Path(NGINX).is_file():
        message = f"{NGINX} not found: apt-get install -y nginx"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return NGINX


@dataclass
class Proxy:
    url: str
    port: int
    process: subprocess.Popen
    tmp: Path

    def error_log(self) -> str:
        return (self.tmp / "error.log").read_text(errors="replace")


@contextmanager
def nginx(
    tmp: Path,
    upstream: str,
    proxy_address: str = "127.0.0.1",
    scheme: str = "$scheme",
    header_timeout: float = 2,
    body_timeout: float = 2,
    max_body: int = 65536,
) -> Iterator[Proxy]:
    """nginx on a free loopback port in front of ``upstream`` (``host:port``), until the block ends."""
    binary = nginx_or_skip()
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "nginx.conf"
    config.write_text(
        CONFIG.format(
            tmp=tmp,
            port=port,
            upstream=upstream,
            proxy_address=proxy_address,
            scheme=scheme,
            header_timeout=f"{header_timeout:g}",
            body_timeout=f"{body_timeout:g}",
            max_body=max_body,
        )
    )
    with (tmp / "nginx.out").open("w") as out:
        process = subprocess.Popen(
            [binary, "-p", str(tmp), "-c", str(config), "-e", str(tmp / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {process.returncode}: {(tmp / 'nginx.out').read_text()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("nginx did not listen within 30 s") from None
                time.sleep(0.05)
        yield Proxy(f"http://127.0.0.1:{port}", port, process, tmp)
    finally:
        stop(process)
