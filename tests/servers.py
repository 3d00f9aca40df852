"""Real PostgreSQL and Redis servers for tests, started on loopback ports in a temporary folder.

The servers come from the Debian packages (``make test`` installs them); the fixtures skip, saying
why, only when they are missing or do not start. Tests that use them are marked ``multimachine``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.context import Studio

EXTRAS = "pip install -r requirements-extras.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres_user() -> list[str]:
    """Run PostgreSQL's programs as the ``postgres`` user when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and runuser is missing: cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--"]


@dataclass
class Postgres:
    bin_dir: Path
    port: int
    prefix: list[str]

    def createdb(self, name: str) -> str:
        subprocess.run([*self.prefix, str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", name], check=True, capture_output=True)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pytest.importorskip("psycopg", reason=f"the psycopg driver is missing ({EXTRAS})")
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(initdbs[-1]).parent
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="slrnet-pg-"))
    if prefix:
        shutil.chown(root, "postgres")
    port = free_port()
    data = root / "data"
    started = False
    try:
        init = subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8"], capture_output=True, text=True)
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
        start = subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            capture_output=True, text=True)
        if start.returncode != 0:
            pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
        started = True
        yield Postgres(bin_dir, port, prefix)
    finally:
        if started:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    redis = pytest.importorskip("redis", reason=f"the redis driver is missing ({EXTRAS})")
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.skip("redis-server did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.multimachine)]


@pytest.fixture(params=BACKENDS)
def any_studio(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    """A fresh Studio on SQLite, and again on a database of the real PostgreSQL server (marked
    ``multimachine``; the module must also expose the ``postgres`` fixture)."""
    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    url = None
    if request.param == "postgresql":
        server: Postgres = request.getfixturevalue("postgres")
        url = server.createdb(f"studio_{abs(hash(request.node.nodeid)) % 10**9}")
    studio = Studio.open(tmp_path / "data", database_url=url)
    yield studio
    studio.close()
