"""Every file output: checked paths, atomic writes with the umask's permissions, locked output folders and files."""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cnnmrf.errors import CnnmrfError
from cnnmrf.interrupts import deferred_interrupts

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None  # type: ignore[assignment]

# The errors of writing a file, as opposed to errors of the code that produces its content.
WRITE_ERRNOS: frozenset[int] = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO, errno.ENOTDIR}
)
LOCK_NAME = ".cnnmrf.lock"
# A temporary's name says which process writes it, so that one left by a killed process can be told from a live one.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TEMPORARY = re.compile(r"\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[^.]+\.tmp$")
LEGACY_STALE_SECONDS = 600.0  # temporaries in the old naming (no writer recorded) count as stale after this long


def write_error(path: str | os.PathLike[str], err: OSError) -> CnnmrfError:
    """The one-line error for an OSError met while writing ``path``: which file, and why in plain words."""
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full (no space left on the device)"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    elif code == errno.EROFS:
        why = "the file system is read-only"
    elif code == errno.ENOTDIR:
        why = "a folder on its path is a file"
    else:
        why = err.strerror or str(err) or type(err).__name__
    return CnnmrfError(f"cannot write {path}: {why}")


def is_write_error(err: BaseException) -> bool:
    """Whether ``err`` is an OSError of writing a file (disk full, permissions, read-only, I/O error)."""
    return isinstance(err, OSError) and err.errno in WRITE_ERRNOS


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of ``path`` left by writers that were killed (kill -9, power loss).

    A temporary names its writer's process and host: it is stale when that process, on this host, is gone. Those of
    other hosts (a shared folder) are left alone; temporaries of the old naming, with no writer recorded, are stale
    once unchanged for :data:`LEGACY_STALE_SECONDS`.

    Returns:
        The files removed.
    """
    path = Path(path)
    removed = []
    try:
        siblings = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in siblings:
        match = _TEMPORARY.search(tmp.name[len(path.name) + 1 :])
        try:
            if match is not None:
                pid = int(match["pid"])
                stale = match["host"] == _HOST and pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = time.time() - tmp.stat().st_mtime > LEGACY_STALE_SECONDS
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents.

    Raises:
        CnnmrfError: a file is in the way, or the folder cannot be created (permissions, read-only, disk full).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CnnmrfError(f"cannot create the folder {folder}: a file is in the way") from None
    except OSError as err:
        raise write_error(folder, err) from err


@contextmanager
def _temporary(path: Path, keep: bool = False) -> Iterator[Path]:
    """A new temporary file beside ``path`` (umask permissions), removed when the block ends (if it succeeded and
    ``keep``, the caller removes it); write errors met in the block become a :func:`write_error` naming ``path``."""
    if path.is_dir():
        raise CnnmrfError(f"cannot write {path}: it is a folder")
    with _made_folder(path.parent):
        remove_stale_temporaries(path)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent)
        except OSError as err:
            raise write_error(path, err) from err
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            os.close(fd)
            yield tmp
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if is_write_error(err):
                raise write_error(path, err) from err  # type: ignore[arg-type]
            raise
        if not keep:
            tmp.unlink(missing_ok=True)


@contextmanager
def _made_folder(folder: Path) -> Iterator[None]:
    """Create ``folder`` and its parents for the block; if the block fails, remove those it created, when empty."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    make_folder(folder)
    try:
        yield
    except BaseException:
        for made in created:
            try:
                made.rmdir()
            except OSError:
                break
        raise


_GROUPS: list[list[tuple[Path, Path]]] = []  # (temporary, target) renames held back by written_together blocks


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``, on any error it is removed.

    A crash, a full disk or Ctrl-C therefore never leaves a half-written ``path`` (nor, but after kill -9, the
    temporary: those are removed by the next write of ``path``), and an existing ``path`` is only replaced by a
    complete file. The file gets the permissions the umask gives a new file. Inside :func:`written_together`, the
    replacement waits for the end of that block.

    Raises:
        CnnmrfError: ``path`` is a folder, or writing fails for want of space or permission (naming ``path``).
    """
    path = Path(path)
    with _temporary(path, keep=bool(_GROUPS)) as tmp:
        yield tmp
        if _GROUPS:
            _GROUPS[-1].append((tmp, path))
        else:
            with deferred_interrupts():
                os.replace(tmp, path)


@contextmanager
def written_together() -> Iterator[None]:
    """Hold back the replacements of the files written in the block (by :func:`atomic_path` and the functions built
    on it) until it ends: then they are renamed into place one after the other with Ctrl-C held back; if it fails,
    none is. So a full disk, a bad input or Ctrl-C never leaves one output of a set without the others.

    Raises:
        CnnmrfError: a rename fails (naming the file).
    """
    pending: list[tuple[Path, Path]] = []
    _GROUPS.append(pending)
    try:
        yield
        _GROUPS.pop()
        with deferred_interrupts():
            for tmp, path in pending:
                try:
                    os.replace(tmp, path)
                except OSError as err:
                    raise write_error(path, err) from err
    finally:
        if _GROUPS and _GROUPS[-1] is pending:
            _GROUPS.pop()
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)


def _write(path: Path, data: bytes, target: Path) -> None:
    """Write ``data`` to the (new, temporary) file ``path`` and flush it to the disk; errors name ``target``."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(target, err) from err


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`), flushed to disk before the rename.

    Raises:
        CnnmrfError: ``path`` is a folder, or it cannot be written (disk full, permissions).
    """
    with atomic_path(path) as tmp:
        _write(tmp, data, Path(path))


def atomic_write_files(contents: Mapping[Path, bytes]) -> None:
    """Write several files as one (see :func:`written_together`): all are replaced, or none.

    Raises:
        CnnmrfError: a path is a folder, or a file cannot be written (disk full, permissions).
    """
    with written_together():
        for path, data in contents.items():
            atomic_write_bytes(path, data)


def _probe(folder: Path, target: Path) -> None:
    """Create and delete a file in ``folder`` (the most reliable test of writability: ACLs, read-only mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".cnnmrf-probe.", dir=folder)
    except OSError as err:
        raise write_error(target, err) from err
    os.close(fd)
    os.unlink(name)


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_folder(folder: str | os.PathLike[str], option: str = "--out") -> None:
    """Check, before any work is done, that ``folder`` can hold the outputs: a folder (or creatable), writable.

    Raises:
        CnnmrfError: it is a file, a file is in the way of creating it, or it cannot be written in.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CnnmrfError(f"{option} {folder} is a file; give a folder")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise CnnmrfError(f"{option} {folder} cannot be created: {base} is a file")
    _probe(base, folder)


def check_output_file(path: str | os.PathLike[str], force: bool, option: str = "--out") -> None:
    """Check, before any work is done, that the file ``path`` may be written: not a folder, not an existing file
    without ``force``, and in a folder that can be created and written in.

    Raises:
        CnnmrfError: it does not.
    """
    path = Path(path)
    if path.is_dir():
        raise CnnmrfError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not force:
        raise CnnmrfError(f"{path} already exists; pass --force to overwrite it")
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise CnnmrfError(f"{option} {path} cannot be created: {base} is a file")
    _probe(base, path)


@contextmanager
def output_folder(folder: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Create ``folder`` (and parents) and hold it for one command: a second cnnmrf command writing into it at the
    same time is refused, and if the command fails, the folders it created are removed again when left empty.

    Check what the folder already holds inside the block, not before it: two commands started together cannot then
    both find it free.

    Raises:
        CnnmrfError: the folder cannot be created, or another cnnmrf command is writing into it.
    """
    folder = Path(folder)
    check_output_folder(folder)
    busy = (
        f"{folder} is in use by another cnnmrf command writing into it; wait for it to finish or give another --out "
        f"for this {command}"
    )
    with _made_folder(folder), _locked(folder / LOCK_NAME, busy):
        yield folder


@contextmanager
def output_file(path: str | os.PathLike[str], force: bool, command: str, option: str = "--out") -> Iterator[Path]:
    """Hold the file ``path`` for one command (a lock file beside it), then check it may be written
    (:func:`check_output_file`): a second cnnmrf command writing it at the same time is refused, and two commands
    started together cannot both find it free. Folders created for it are removed again if the command fails.

    Raises:
        CnnmrfError: another cnnmrf command is writing ``path``, or :func:`check_output_file` refuses it.
    """
    path = Path(path)
    check_output_file(path, force=True, option=option)  # a folder, or not creatable: before creating anything
    busy = f"{path} is being written by another cnnmrf command; wait for it to finish or give another {option}"
    with _made_folder(path.parent), _locked(path.parent / f".{path.name}{LOCK_NAME}", f"{busy} for this {command}"):
        check_output_file(path, force, option)
        yield path


def check_outside_package(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Refuse to write inside the installed cnnmrf package (its code and bundled weights, shared by every user).

    Raises:
        CnnmrfError: ``path`` (symbolic links followed) lies in the package's folder.
    """
    package = Path(__file__).resolve().parent
    if Path(path).resolve().is_relative_to(package):
        raise CnnmrfError(
            f"{option} {path} is inside the installed cnnmrf package ({package}, its code and bundled weights); "
            "write it elsewhere"
        )


@contextmanager
def _locked(lock: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` (created; removed on exit; freed if killed); ``busy`` is the error
    when another process holds it."""
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as err:
            raise write_error(lock, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CnnmrfError(busy) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and lock: lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
