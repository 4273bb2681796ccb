"""Publishing exports: staging, version numbers, owners and file modes.

Standard library only, so a test (or an operator's script) can use it
without TensorFlow.

An export is written into a staging entry named
`.tmp-keras-circle-<pid>-<start>-<token>` next to where it will be published
(inside the TF Serving base directory for a SavedModel: TF Serving loads only
all-digit folder names, so it never sees a staging folder). The exporting
process holds an exclusive `flock` on the entry until it is published or
removed. A later export removes entries whose owner is gone (a killed
export): the recorded process is not running (same pid *and* start time, so
a recycled pid does not count) and the lock is free. An entry whose owner is
alive is never removed.

Publishing a version renames the staging folder onto `base_dir/<n>`, where
`n` is the next free number at that moment; `os.rename` onto an existing,
non-empty folder fails, and the next number is tried. Concurrent exports
into one base directory therefore get distinct versions.

Published entries get the modes a plain write gives under the process
umask (`0755` folders and `0644` files under umask 022), not the owner-only
modes of `tempfile`, so a server running as another user can read them.
"""

import errno
import os
import secrets
import shutil
import warnings

try:
    import fcntl
except ImportError:  # Windows: no flock; staging entries are never reaped.
    fcntl = None

STAGING_PREFIX = ".tmp-keras-circle-"


def latest_version(base_dir):
    """Returns the largest all-digit version folder in `base_dir`, or `None`."""
    versions = [
        int(name)
        for name in (os.listdir(base_dir) if os.path.isdir(base_dir) else [])
        if name.isdigit() and os.path.isdir(os.path.join(base_dir, name))
    ]
    return max(versions, default=None)


def next_version(base_dir):
    """Returns 1 + the largest integer version directory in `base_dir` (or 1)."""
    return (latest_version(base_dir) or 0) + 1


def process_start_time(pid):
    """The start time of process `pid` (clock ticks since boot), or `None`.

    Read from `/proc/<pid>/stat` (Linux); `None` where that does not exist.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses.
    return stat.rsplit(b")", 1)[1].split()[19].decode()


def staging_owner(name):
    """`(pid, start)` recorded in a staging entry's name, or `None`."""
    if not name.startswith(STAGING_PREFIX):
        return None
    parts = name[len(STAGING_PREFIX) :].split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


def owner_alive(pid, start):
    """Whether process `pid`, started at `start`, still runs."""
    if os.name != "posix":
        return True  # no safe liveness probe: keep the entry
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    now = process_start_time(pid)
    return now is None or start == "0" or now == start


def remove_stale_staging(parent):
    """Removes the staging entries in `parent` left by exports that died.

    Args:
        parent: The folder to clean (a TF Serving base directory, or the
            folder of an ONNX file).

    Returns:
        The list of removed paths.
    """
    removed = []
    if fcntl is None or not os.path.isdir(parent):
        return removed
    for name in sorted(os.listdir(parent)):
        owner = staging_owner(name)
        if owner is None or owner_alive(*owner):
            continue
        path = os.path.join(parent, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # another export removed it first
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A free lock and a dead owner: nothing will write here again.
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(path)
        except BlockingIOError:
            pass  # held by a live export (another pid namespace)
        except FileNotFoundError:
            pass  # another export removed it first
        except OSError as error:
            warnings.warn(
                f"Could not remove the staging entry {path!r} of a dead export: "
                f"{error}",
                stacklevel=2,
            )
        finally:
            os.close(fd)
    return removed


class Staging:
    """A locked staging folder or file in `parent`, removed unless published.

    Use as a context manager: on leaving it without a publish (an exception
    or `KeyboardInterrupt`), the entry is removed.

    Args:
        parent: The folder that will hold the published entry.
        directory: A folder (SavedModel) if `True`, else a file (ONNX).
        suffix: Appended to the entry name (e.g. the published file name).
    """

    def __init__(self, parent, directory=True, suffix=""):
        pid = os.getpid()
        start = process_start_time(pid) or "0"
        name = f"{STAGING_PREFIX}{pid}-{start}-{secrets.token_hex(4)}{suffix}"
        self.path = os.path.join(parent, name)
        self.published = None
        if directory:
            os.mkdir(self.path)  # mode 0o777 & ~umask, as any folder
            self._fd = os.open(self.path, os.O_RDONLY)
            # The umask, without os.umask (which changes it for all threads).
            self.umask = ~os.stat(self.path).st_mode & 0o777
        else:
            self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
            self.umask = ~os.stat(self.path).st_mode & 0o666
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        try:
            if self.published is None:
                if os.path.isdir(self.path):
                    shutil.rmtree(self.path, ignore_errors=True)
                elif os.path.lexists(self.path):
                    os.remove(self.path)
        finally:
            os.close(self._fd)  # releases the lock
        return False

    def set_modes(self):
        """Gives every folder and file the mode a plain write would give."""
        folder_mode, file_mode = 0o777 & ~self.umask, 0o666 & ~self.umask
        if not os.path.isdir(self.path):
            os.chmod(self.path, file_mode)
            return
        os.chmod(self.path, folder_mode)
        for root, folders, files in os.walk(self.path):
            for name in folders:
                os.chmod(os.path.join(root, name), folder_mode, follow_symlinks=False)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, file_mode)

    def publish_version(self, base_dir, version=None):
        """Renames the staging folder onto `base_dir/<version>`.

        Args:
            base_dir: The TF Serving base directory (the staging's parent).
            version: The version number, or `None` for the next free one.

        Returns:
            The published path.

        Raises:
            FileExistsError: If `version` was given and exists.
        """
        self.set_modes()
        number = next_version(base_dir) if version is None else version
        while True:
            final = os.path.join(base_dir, str(number))
            # rename(2) would replace an empty folder: never take one over.
            if not os.path.lexists(final):
                try:
                    os.rename(self.path, final)
                    self.published = final
                    return final
                except OSError as error:
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            if version is not None:
                raise FileExistsError(
                    f"Version {version} already exists: {final!r} (another "
                    "export published it first)."
                )
            number += 1

    def publish_file(self, path):
        """Moves the staging file onto `path` (replacing it atomically)."""
        self.set_modes()
        os.replace(self.path, path)
        self.published = path
        return path
