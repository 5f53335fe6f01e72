"""PostgreSQL as a local process: the shared state's database when several instances run (``stack up --with-postgres``).

Debian's ``postgresql`` package (``infra/install-system-deps.sh``) provides the server; its binaries are not on PATH,
``pg_config --bindir`` names them. One cluster per state dir, initialised on first start with ``trust``
authentication for the role ``diffsentry`` and listening on 127.0.0.1 only (no unix socket).

The server refuses to run as root. From a root shell (containers, CI) it runs as the package's ``postgres`` user, and
its data lies in that user's home (one folder per state dir): a state dir inside a private temporary folder (a
test's) is out of that user's reach. As any other user, the server runs as that user, its data in the state dir.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from core.stack_state import POSTGRES_ROLE
from infra.processes import StackError

POSTGRES_INSTALL = "apt-get install postgresql (infra/install-system-deps.sh)"
SERVER_USER = "postgres"  # the account Debian's package creates


def postgres_bin_dir() -> Path:
    """Where ``postgres`` and ``initdb`` are, as the installed package says."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise StackError(f"PostgreSQL is not installed (no pg_config on PATH); {POSTGRES_INSTALL}")
    bin_dir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    if not (bin_dir / "postgres").is_file() or not (bin_dir / "initdb").is_file():
        raise StackError(f"no postgres server in {bin_dir} (only the client libraries?); {POSTGRES_INSTALL}")
    return bin_dir


def server_user() -> str | None:
    """The account the server must run as: None (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise StackError(f"running as root, PostgreSQL needs the {SERVER_USER!r} user; {POSTGRES_INSTALL}") from None
    return SERVER_USER


def postgres_data_dir(state_dir: Path) -> Path:
    """The cluster of ``state_dir``: inside it, or as root in the server user's home."""
    user = server_user()
    if user is None:
        return state_dir.resolve() / "postgres"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return Path(pwd.getpwnam(user).pw_dir) / "diffsentry" / digest


def prepare_cluster(data_dir: Path) -> str | None:
    """Initialises the cluster in ``data_dir`` unless it holds one; returns the user the server runs as."""
    user = server_user()
    if (data_dir / "PG_VERSION").is_file():
        return user
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if user is not None:
        account = pwd.getpwnam(user)
        for path in (data_dir.parent, data_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
    command = [str(postgres_bin_dir() / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", POSTGRES_ROLE]
    done = subprocess.run([*command, "--no-sync"], capture_output=True, text=True, user=user, cwd=data_dir)
    if done.returncode != 0:
        raise StackError(f"initdb {data_dir} failed:\n{done.stdout}{done.stderr}")
    return user


def server_command(data_dir: Path, port: int) -> list[str]:
    return [
        str(postgres_bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",  # TCP only: no socket file in a folder the server user may not write
    ]


def postgres_healthy(url: str, timeout_s: float = 3.0) -> bool:
    """A connection to the database of ``url`` (a SQLAlchemy URL) answers a query."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, connect_timeout=max(1, int(timeout_s))) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
