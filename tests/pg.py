"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary data directory, 127.0.0.1 on a
free port, trust authentication, one database; stopped (immediate mode) and removed afterwards.

PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as the ``postgres`` system user (which
Debian's package creates). Missing binaries or psycopg skip the test, or fail it when
COLORLAB_REQUIRE_POSTGRES=1 (set by .ci/run, which installs the package).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "postgres"
TIMEOUT = 120  # seconds for any one of initdb, pg_ctl start/stop


def _missing(message: str):
    required = os.environ.get("COLORLAB_REQUIRE_POSTGRES") == "1"
    (pytest.fail if required else pytest.skip)(message)


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def require() -> Path:
    """The binaries' folder, after checking that psycopg, the binaries and (as root) the postgres user exist."""
    if importlib.util.find_spec("psycopg") is None:
        _missing("needs psycopg 3: pip install -e '.[dev]' (or '.[postgres]')")
    folder = binaries()
    if folder is None:
        _missing("needs PostgreSQL's server binaries (initdb, pg_ctl): apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            _missing(f"PostgreSQL does not run as root and there is no {USER!r} user to run it as: "
                     "apt-get install postgresql (it creates the user)")
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner() -> dict:
    """subprocess options that run a command as the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(USER)
    env = {**os.environ, "HOME": entry.pw_dir, "USER": USER, "LOGNAME": USER}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


def _run(command: list, cwd: Path, what: str, log: Path | None = None) -> None:
    with open(cwd / f"{what}.out", "w") as out:
        done = subprocess.run([str(c) for c in command], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT, **_as_owner())
    if done.returncode != 0:
        detail = (cwd / f"{what}.out").read_text()[-3000:]
        if log is not None and log.is_file():
            detail += "\n-- server log:\n" + log.read_text()[-3000:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' '.join(map(str, command))}\n{detail}")


@contextlib.contextmanager
def postgres_server(database: str = "study") -> Iterator[str]:
    """Yields ``postgresql://postgres@127.0.0.1:PORT/DATABASE`` of a fresh server; skips (or fails, see the
    module docstring) when PostgreSQL or psycopg is missing."""
    folder = require()
    import psycopg

    base = Path(tempfile.mkdtemp(prefix="colorlab-pg-"))  # in /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        entry = pwd.getpwnam(USER)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, log, started = base / "data", base / "server.log", False
    try:
        _run([folder / "initdb", "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
             base, "initdb")
        for attempt in range(3):  # the free port may be taken between free_port() and the server's bind
            port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            try:
                _run([folder / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start"], base,
                     "pg_ctl-start", log)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        started = True
        with psycopg.connect(f"postgresql://{USER}@127.0.0.1:{port}/postgres", autocommit=True,
                             connect_timeout=30) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield f"postgresql://{USER}@127.0.0.1:{port}/{database}"
    finally:
        if started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run([folder / "pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "60", "stop"], base,
                     "pg_ctl-stop")
        shutil.rmtree(base, ignore_errors=True)
