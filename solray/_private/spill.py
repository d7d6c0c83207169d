"""Spill files: where a node's full object store keeps objects on disk.

The user may name the spill directory (`object_spilling_directory`, or
`object_spilling_config` of type "filesystem"). It may hold the user's own
files, and other nodes may share it (the nodes of one `Cluster`, other
sessions, other users). So a node never writes into it directly: it writes
only inside a subdirectory of its own, `solray_spill_<session>_<node id>`,
which it creates itself (mode 0700, then checked with lstat: a real directory,
owned by this user, closed to others) and afterwards reaches only through a
file descriptor. Files are created relative to that descriptor with
O_CREAT | O_EXCL | O_NOFOLLOW and mode 0600: a name already taken (say, a
symlink planted to point elsewhere) is never opened or written through; the
file takes the next free name instead. At shutdown the node deletes the files
it created, then the subdirectory if that left it empty; nothing else.

Threads: `write` and `read` do the blocking I/O and run in the object store's
I/O threads; they touch only the bytes and the file they are given. Every
other method, and `files`, belong to the node's event loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat

logger = logging.getLogger(__name__)

# The bytes moved per system call when no buffer_size is configured.
DEFAULT_BUFFER_SIZE = 8 * 1024 * 1024
# How many names `write` tries before giving up (only names planted by
# someone else are ever taken).
_NAME_ATTEMPTS = 16


def subdirectory_name(session_dir: str, node_id: str) -> str:
    """A node's own subdirectory of a spill directory: per session, per node."""
    return f"solray_spill_{os.path.basename(session_dir)}_{node_id}"


class SpillDirectory:
    """A node's subdirectory of one spill directory."""

    def __init__(self, base: str, session_dir: str, node_id: str):
        self.base = base
        self.path = os.path.join(base, subdirectory_name(session_dir, node_id))
        self.files: set[str] = set()  # names this node created and has not deleted
        self._fd: int | None = None

    def open(self) -> None:
        """Create the subdirectory (at the first spill) and hold it open."""
        if self._fd is not None:
            return
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            raise FileExistsError(
                f"the spill directory {self.path} already exists: this node creates it "
                "itself and will not use one made by someone else"
            ) from None
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise PermissionError(
                    f"the spill directory {self.path} is not a private directory of this "
                    f"user (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)})"
                )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def write(self, name: str, data: memoryview, buffer_size: int) -> str:
        """(I/O thread) Store `data` in a new file; returns the name used."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for attempt in range(_NAME_ATTEMPTS):
            candidate = name if attempt == 0 else f"{name}.{attempt}"
            try:
                fd = os.open(candidate, flags, 0o600, dir_fd=self._fd)
            except FileExistsError:
                continue  # not ours: leave it alone, take another name
            try:
                written = 0
                while written < data.nbytes:
                    written += os.write(fd, data[written : written + buffer_size])
            except BaseException:
                os.unlink(candidate, dir_fd=self._fd)
                raise
            finally:
                os.close(fd)
            return candidate
        raise FileExistsError(f"no free file name for {name} in {self.path}")

    def read(self, name: str, into: memoryview, buffer_size: int) -> None:
        """(I/O thread) Fill `into` from the file `name`."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._fd)
        try:
            done = 0
            while done < into.nbytes:
                n = os.readv(fd, [into[done : done + buffer_size]])
                if n == 0:
                    raise OSError(f"spill file {os.path.join(self.path, name)} is truncated")
                done += n
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        self.files.discard(name)
        try:
            os.unlink(name, dir_fd=self._fd)
        except OSError as e:
            logger.warning("could not delete spill file %s: %s", os.path.join(self.path, name), e)

    def close(self) -> None:
        """Delete what this node created; leave anything else where it is."""
        if self._fd is None:
            return
        for name in list(self.files):
            self.remove(name)
        os.close(self._fd)
        self._fd = None
        try:
            os.rmdir(self.path)
        except OSError as e:
            logger.warning("left the spill directory %s in place: %s", self.path, e)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.base).free
