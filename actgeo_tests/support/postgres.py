"""Start a real, throw-away PostgreSQL server on 127.0.0.1 for integration tests (Debian's `postgresql`)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def postgres_available() -> bool:
    return _pg_bin() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Yield a SQLAlchemy URL (psycopg2) of a fresh server; stop it and delete its data afterwards.

    Runs as the `postgres` system user when the tests run as root (initdb refuses root).
    """
    bindir = _pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found: `make test` installs Debian's postgresql")
    root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="actgeo-pg-")
    datadir = os.path.join(tmp, "data")
    port = _free_port()
    pre: list[str] = []
    if root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError("running as root needs the `postgres` system user: `make test` installs "
                               "Debian's postgresql, which creates it") from None
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        pre = ["runuser", "-u", "postgres", "--"]
    log = os.path.join(tmp, "server.log")
    started = False
    try:
        _run([*pre, f"{bindir}/initdb", "-D", datadir, "-U", "actgeo", "--auth=trust", "-E", "UTF8"], log)
        started = True  # from here on, try to stop it (a no-op if it never came up)
        _run([*pre, f"{bindir}/pg_ctl", "-D", datadir, "-l", log, "-w", "-t", "60",
              "-o", f"-h 127.0.0.1 -p {port} -k {tmp}", "start"], log)
        deadline = time.time() + 30
        while True:
            r = subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"postgres did not become ready on port {port}:\n{_tail(log)}")
            time.sleep(0.3)
        _run([*pre, f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "actgeo", "actgeo"], log)
        yield f"postgresql+psycopg2://actgeo@127.0.0.1:{port}/actgeo"
    finally:
        if started:
            subprocess.run([*pre, f"{bindir}/pg_ctl", "-D", datadir, "-m", "fast", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return "(no server log)"


def _run(cmd: list[str], log: str) -> None:
    """Run a PostgreSQL tool; on failure raise RuntimeError with its output and the server log's tail."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(
            f"{os.path.basename(cmd[cmd.index('--') + 1] if '--' in cmd else cmd[0])} failed "
            f"(exit {r.returncode}):\n{r.stdout}{r.stderr}\nserver log:\n{_tail(log)}"
        )
