"""Where edgecnn keeps generated data, caches and build products, and how it writes them without losses.

- `cache_dir`: $EDGECNN_CACHE (default ~/.cache/edgecnn), joined with parts.
- `check_output`, `check_cache_root`: every path a command will write is checked before any model is
  loaded (parent a file, a pseudo or read-only file system, no permission, the wrong kind of entry), and
  refused in one line naming the option. Checking creates nothing but a probe it removes at once.
- `atomic_dir`, `atomic_write_bytes`: written under a temporary name, renamed into place.
- Temporaries carry the id of the process that made them (`.tmp-<name>-<pid>-<random>` beside their
  final name, `edgecnn-<what>-<pid>-<random>` in TMPDIR from `work_dir`); `sweep_stale_temporaries`
  removes those of processes that are gone, `process_scope` runs it at start and turns SIGTERM into the
  same cleanup as Ctrl-C.

Standard library only: the board's runner imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgecnn.errors import EdgecnnError

# Views of the kernel, never a place for a user's files (as root a probe may even succeed on some).
PSEUDO_FILE_SYSTEMS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
    "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore", "rpc_pipefs", "securityfs",
    "sysfs", "tracefs"})
# Cache folders the start-up sweep lists (one listing each: the sweep must stay cheap).
SWEPT_CACHE_FOLDERS = ("bundles", "pruned", "evaluations")
# -<pid>-<8 characters of tempfile's alphabet> ends every temporary name edgecnn makes.
_TEMP_NAME = re.compile(r"^(?:\.tmp-|edgecnn-).+-(\d+)-[a-z0-9_]{8}$")


class PathError(EdgecnnError):
    """An output or cache path edgecnn cannot write, said before any work starts."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI timeout), raised like Ctrl-C so the same cleanup runs; the CLI exits 143."""


# ---------------------------------------------------------------------------- the cache


def cache_root() -> Path:
    """$EDGECNN_CACHE, default ~/.cache/edgecnn (not created here)."""
    return Path(os.environ.get("EDGECNN_CACHE") or Path.home() / ".cache" / "edgecnn")


def _cache_what() -> str:
    return "EDGECNN_CACHE" if os.environ.get("EDGECNN_CACHE") else "the cache folder"


def cache_dir(*parts: str) -> Path:
    """$EDGECNN_CACHE (default ~/.cache/edgecnn), joined with parts, created on demand."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        check_cache_root()  # the usual causes, said the usual way
        raise PathError(f"cannot create {path} in {_cache_what()} {cache_root()}: {e.strerror or e}") from None
    return path


def check_cache_root() -> Path:
    """Refuse an unusable cache folder before any work: a file, unwritable, on a pseudo or read-only file system."""
    return check_output(cache_root(), "dir", _cache_what())


# ---------------------------------------------------------------------------- checking what will be written


def check_output(path: str | Path, kind: str = "dir", what: str = "--output", *, renamed: bool = False) -> Path:
    """Refuse, with a PathError naming `what`, a path edgecnn could not write; return it as a Path.

    kind "dir": a folder that files are written into (created when missing); "file": a file written
    through a temporary sibling and renamed. renamed: the folder is built beside itself and renamed
    into place (a bundle), so its parent is what must be writable. Creates nothing.
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', not {kind!r}")
    p = Path(path)
    if os.path.lexists(p):
        if kind == "dir" and not p.is_dir():
            raise PathError(f"{what} {p} is {_describe(p)}, not a folder")
        if kind == "file" and p.is_dir():
            raise PathError(f"{what} {p} is a folder; give a file name")
        if kind == "file" and not p.is_file():
            raise PathError(f"{what} {p} is {_describe(p)}, not a regular file")
    inside = kind == "dir" and p.is_dir() and not renamed
    _check_folder(p if inside else p.parent, p, what)
    return p


def _check_folder(folder: Path, p: Path, what: str) -> None:
    """`folder` (or, while it does not exist, its nearest existing ancestor) takes new entries."""
    base = folder
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise PathError(f"{what} {p}: {base} is {_describe(base)}, not a folder")
    fs, mount = _file_system(base)
    if fs in PSEUDO_FILE_SYSTEMS:
        raise PathError(f"{what} {p} is on the {fs} pseudo file system ({mount}); pick a path on a disk")
    try:
        read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise PathError(f"{what} {p} is on a read-only file system ({mount or base})")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PathError(f"{what} {p}: no permission to write in {base}")
    try:  # os.access trusts mode bits; only creating an entry shows ACLs, quotas, a full disk's inodes
        os.rmdir(tempfile.mkdtemp(prefix=".edgecnn-probe-", dir=base))
    except OSError as e:
        raise PathError(f"{what} {p}: cannot write in {base} ({e.strerror or e})") from None


def _describe(p: Path) -> str:
    if p.is_symlink() and not p.exists():
        return "a broken link"
    try:
        mode = p.stat().st_mode
    except OSError:
        return "unreadable"
    for test, words in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a file or folder"


def _file_system(path: Path) -> tuple[str | None, str | None]:
    """(type, mount point) of the file system holding `path`, from /proc/self/mounts; (None, None) elsewhere."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    found: tuple[str | None, str | None] = (None, None)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if real == mount or real.startswith(mount.rstrip("/") + "/"):
            if found[1] is None or len(mount) >= len(found[1]):  # the innermost, the later of two on one point
                found = (fields[2], mount)
    return found


# ---------------------------------------------------------------------------- writing through temporary names


def temp_prefix(name: str) -> str:
    """Prefix of a temporary sibling of `name`: `.tmp-<name>-<pid>-`, so a sweep can tell whose it is."""
    return f".tmp-{name}-{os.getpid()}-"


def work_dir(what: str) -> tempfile.TemporaryDirectory:
    """A scratch folder `edgecnn-<what>-<pid>-<random>` in TMPDIR, removed on exit (swept if the process dies)."""
    return tempfile.TemporaryDirectory(prefix=f"edgecnn-{what}-{os.getpid()}-")


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place on success.

    An interrupted run leaves only a `.tmp-*` sibling (removed here, or swept once its process is
    gone), never a half-written `final` that looks complete. An existing `final` is replaced as a
    whole, so the caller decides that it may be: cache entries are edgecnn's, and compile's -o is
    checked by compile.cache.check_output_dir. The folder gets the user's umask, not mkdtemp's 0700.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name), dir=final.parent))
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.lexists(final):
            # Moved aside, not deleted first: a failed rename below puts it back.
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name), dir=final.parent))
            os.rmdir(old)
            os.replace(final, old)
        try:
            tmp.rename(final)
        except BaseException:
            if old is not None and not os.path.lexists(final):
                os.replace(old, final)
                old = None
            raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and os.path.lexists(leftover):
                _remove(leftover)


def _umask() -> int:
    try:  # Linux says it without changing it: no window in which another thread sees umask 0
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file via a temporary name in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------- stale temporaries and signals


def sweep_stale_temporaries() -> list[Path]:
    """Remove edgecnn's temporaries whose process is gone; return what was removed.

    Looks only at `.tmp-*` entries in the cache's bundle and pruned folders and `edgecnn-*` entries
    at TMPDIR's top level, one listing each. Keeps every temporary of a live process (or whose
    process cannot be asked) and every entry another user owns.
    """
    places = [(cache_root() / sub, ".tmp-") for sub in SWEPT_CACHE_FOLDERS]
    places.append((Path(tempfile.gettempdir()), "edgecnn-"))
    removed = []
    for folder, prefix in places:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TEMP_NAME.match(entry.name) if entry.name.startswith(prefix) else None
            if match is None:
                continue
            try:
                owner = entry.stat(follow_symlinks=False).st_uid
            except OSError:
                continue
            if owner != os.getuid() or _alive(int(match.group(1))):
                continue
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():  # os.kill(0, ...) would ask the whole process group
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM), or no way to ask: keep its files
        return True
    return True


@contextmanager
def process_scope(sweep: bool = True) -> Iterator[None]:
    """Around a command-line process's work: SIGTERM raises Terminated, a KeyboardInterrupt.

    So a CI timeout gets Ctrl-C's cleanup (temporary folders removed, no half artifact). With
    `sweep`, stale temporaries of dead processes are removed first; a failing sweep never stops
    the command. The previous SIGTERM handler comes back at the end.
    """
    _STOPPED_BY.clear()
    previous = _handle_sigterm()
    previous_int = _note_sigint()
    try:
        if sweep:
            try:
                sweep_stale_temporaries()
            except (OSError, RuntimeError):  # RuntimeError: no home folder to find the cache in
                pass
        yield
    finally:
        stopped_stderr()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


_STOPPED_BY: list[int] = []  # the signal that stopped the command, once one has


def stopped_by() -> int | None:
    """SIGINT or SIGTERM once one arrived inside process_scope, else None.

    An interrupt that lands inside a library's import can surface as another exception (TensorFlow's
    half-imported modules raise AttributeError); the entry point still reports it as the interrupt.
    """
    return _STOPPED_BY[0] if _STOPPED_BY else None


_REAL_STDERR: list = []  # sys.stderr as it was before an interrupt muted the libraries' reports of it


def _stop(signum: int) -> None:
    """Note the signal and mute sys.stderr: a library whose C code the interrupt broke prints a traceback of
    its own on the way out (TensorFlow's nest.flatten in the middle of an import); edgecnn's one line about
    the interrupt goes to the real stderr, which process_scope puts back on its way out."""
    import io
    import sys

    _STOPPED_BY.append(signum)
    if not _REAL_STDERR:
        _REAL_STDERR.append(sys.stderr)
        sys.stderr = io.StringIO()


def raise_if_stopped() -> None:
    """The interrupt again, where a library swallowed it (TensorFlow's converter falls back on any
    exception, and the one an interrupt causes inside its C code is an ordinary SystemError)."""
    if _STOPPED_BY:
        raise Terminated() if _STOPPED_BY[0] == signal.SIGTERM else KeyboardInterrupt()


def stopped_stderr():
    """The stderr to say the interrupt on: the real one, muted since the signal arrived."""
    import sys

    if _REAL_STDERR:
        sys.stderr = _REAL_STDERR.pop()
    return sys.stderr


def _note_sigint():
    def interrupt(signum, frame):
        _stop(signum)
        raise KeyboardInterrupt()

    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:  # ignored, or someone else's handler: left alone
            return None
        signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread
        return None
    return previous


def _handle_sigterm():
    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the cleanup short
        _stop(signum)
        raise Terminated()

    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_IGN:  # whoever started us asked for TERM to be ignored
            return None
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: signals stay as they are
        return None
    return signal.SIG_DFL if previous is None else previous
