"""Local folders and files of a runtime_env, moved to every node.

The owner packs a `working_dir` or a `py_modules` folder into a zip whose
bytes depend only on the files' paths, contents and modes (fixed timestamps,
sorted entries), so its sha256 names the content: the same folder gives the
same package in every job, and a changed file gives a new one. The package
goes once into the control store's key-value store (namespace
`runtime_env_packages`, skipped when the key is there), and the env carries
`pkg://<sha256>[/<subfolder>]` in place of the path.

A node fetches each package once and unpacks it into its own cache
(`<session>/runtime_resources/<node>/packages/<sha256>`), first into a
temporary folder renamed into place, so a half-unpacked package is never
seen. Entries that would land outside the folder (absolute paths, `..`,
links) are refused: a package is data from another process, and a node must
not let it write anywhere else.

What is left out of a working_dir (Ray's rules): `.git`, `.venv`, `venv` and
`__pycache__` (RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES replaces that list),
what the folder's `.gitignore` files exclude, and the env's `excludes`
(gitignore syntax, relative to the folder). A package larger than
MAX_PACKAGE_BYTES is refused before anything is uploaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import zipfile

from solray._private.runtime_env.spec import PACKAGE_URI

NAMESPACE = "runtime_env_packages"
MAX_PACKAGE_BYTES = 500 * 1024 * 1024  # Ray's limit for a package
DEFAULT_EXCLUDES = (".git", ".venv", "venv", "__pycache__")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def default_excludes() -> list[str]:
    override = os.environ.get("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES")
    if override is not None:
        return [p.strip() for p in override.split(",") if p.strip()]
    return list(DEFAULT_EXCLUDES)


def _files(root: str, excludes: list[str]) -> list[str]:
    """Paths (relative, '/'-separated, sorted) of the files to pack."""
    # Imported here, not at the top: every driver imports this module at
    # init(), and importing pathspec (and the patterns it compiles) cost
    # each one about 10 ms; only packing a directory needs it.
    import pathspec

    rules = [("", pathspec.GitIgnoreSpec.from_lines(default_excludes() + excludes))]
    found = []
    for directory, subdirs, files in os.walk(root):
        relative = os.path.relpath(directory, root).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        ignore_file = os.path.join(directory, ".gitignore")
        if os.path.isfile(ignore_file):
            with open(ignore_file, errors="replace") as f:
                rules.append((prefix, pathspec.GitIgnoreSpec.from_lines(f)))

        def excluded(path: str, is_dir: bool) -> bool:
            for base, spec in rules:
                if path.startswith(base):
                    tail = path[len(base) :] + ("/" if is_dir else "")
                    if spec.match_file(tail):
                        return True
            return False

        subdirs[:] = sorted(d for d in subdirs if not excluded(prefix + d, True))
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path) and not os.path.exists(path):
                continue  # a dangling link has nothing to send
            if not excluded(prefix + name, False):
                found.append(prefix + name)
    return sorted(found)


def pack_folder(root: str, excludes: list[str], top: str = "") -> bytes:
    """A zip of `root`'s files (under `top/` if given), the same bytes for the
    same content."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for relative in _files(root, excludes):
            path = os.path.join(root, relative)
            total += os.path.getsize(path)
            if total > MAX_PACKAGE_BYTES:
                raise ValueError(_too_large(root, f"more than {MAX_PACKAGE_BYTES} bytes of files"))
            info = zipfile.ZipInfo(f"{top}/{relative}" if top else relative, _EPOCH)
            info.external_attr = (os.stat(path).st_mode & 0o777 | stat.S_IFREG) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                archive.writestr(info, f.read())
    return buffer.getvalue()


def _too_large(path: str, what: str) -> str:
    return (
        f"runtime_env package {path} is too large ({what}; the limit is "
        f"{MAX_PACKAGE_BYTES // 2**20} MiB): leave large files out with `excludes` or a "
        ".gitignore, and read large data from shared storage instead"
    )


def package(path: str, field: str, excludes: list[str]) -> tuple[str, bytes]:
    """(URI, zip bytes) for a working_dir or py_modules entry."""
    if os.path.isdir(path):
        top = os.path.basename(os.path.normpath(path)) if field == "py_modules" else ""
        data = pack_folder(path, excludes, top)
        subfolder = ""
    else:
        if os.path.getsize(path) > MAX_PACKAGE_BYTES:
            raise ValueError(_too_large(path, f"{os.path.getsize(path)} bytes"))
        with open(path, "rb") as f:
            data = f.read()
        subfolder = _single_top_folder(data, path) if field == "working_dir" else ""
    if len(data) > MAX_PACKAGE_BYTES:
        raise ValueError(_too_large(path, f"{len(data)} bytes packed"))
    uri = PACKAGE_URI + hashlib.sha256(data).hexdigest()
    return (f"{uri}/{subfolder}" if subfolder else uri), data


def _single_top_folder(data: bytes, path: str) -> str:
    """A zip holding one folder is that folder's content (Ray's rule)."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile as e:
        raise ValueError(f"runtime_env: {path} is not a valid zip file: {e}") from None
    tops = {n.split("/", 1)[0] for n in names if n}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop()
    return ""


def split_uri(uri: str) -> tuple[str, str]:
    """`pkg://<sha256>[/<subfolder>]` -> (sha256, subfolder)."""
    body = uri[len(PACKAGE_URI) :]
    digest, _, subfolder = body.partition("/")
    return digest, subfolder


def unpacked_folder(uri: str, cache: str) -> str | None:
    """The folder holding package `uri` if this node unpacked it already."""
    digest, subfolder = split_uri(uri)
    target = os.path.join(cache, digest)
    if not os.path.isdir(target):
        return None
    return os.path.join(target, subfolder) if subfolder else target


def unpack(uri: str, cache: str, data: bytes) -> str:
    """Unpack package `uri` (its bytes, already checked against its sha256)
    into this node's cache; the folder holding it. Blocking I/O: runs in a
    thread of the node."""
    digest, _ = split_uri(uri)
    target = os.path.join(cache, digest)
    staging = f"{target}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=0o700)
    try:
        _extract(data, staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return unpacked_folder(uri, cache)


def _extract(data: bytes, destination: str) -> None:
    root = os.path.realpath(destination)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ValueError(f"runtime_env package entry {info.filename!r} is a link")
            path = os.path.realpath(os.path.join(root, info.filename))
            if os.path.isabs(info.filename) or not path.startswith(root + os.sep):
                raise ValueError(
                    f"runtime_env package entry {info.filename!r} points outside its folder"
                )
            archive.extract(info, root)
            if mode & 0o777 and not info.is_dir():
                os.chmod(path, mode & 0o755)
