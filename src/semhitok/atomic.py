"""Atomic outputs: every file and folder semhitok writes appears whole or not at all.

An output is written under a hidden temporary name beside its destination (same file system, so
the final ``os.replace`` / ``os.rename`` is atomic) and moved into place only by ``commit()``.
Leaving the ``with`` block without committing (an error, a full disk, Ctrl-C) removes the temporary
file or folder and any parent folders created for it, so nothing partial is left behind.

Temporary files and folders are created with mode 0o666 / 0o777 and the process umask applies, so
outputs get the same permissions as any file the user creates (``tempfile.mkstemp``/``mkdtemp``
would make them 0600 / 0700).

Every failure to write is an :class:`OutputError` (an ``OSError``) whose one-line message names the
destination, e.g. ``cannot write out/model: no space left on device``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["AtomicDir", "AtomicFile", "OutputError", "current_umask"]


class OutputError(OSError):
    """An output could not be written; ``str()`` is one line naming the destination."""

    def __init__(self, path: str | Path, reason: str, code: int | None = None) -> None:
        super().__init__(code, reason)
        self.path = Path(path)
        self.reason = reason
        self.message = f"cannot write {path}: {reason}"

    def __str__(self) -> str:
        return self.message


def reason_of(exc: BaseException) -> str:
    """A short human reason: "no space left on device", "read-only file system", ..."""
    if isinstance(exc, OSError) and exc.errno is not None:
        text = exc.strerror or errno.errorcode.get(exc.errno, "")
        return text[:1].lower() + text[1:]
    text = " ".join(str(exc).split())
    if "No space left on device" in text:  # safetensors' Rust writer reports I/O errors as text
        return "no space left on device"
    return text or type(exc).__name__


def _errno_of(exc: BaseException) -> int | None:
    return exc.errno if isinstance(exc, OSError) else None


def _writer_errors() -> tuple[type[BaseException], ...]:
    """What a write can raise: OSError, and safetensors' own error type for its Rust writer."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors: its errors are OSErrors or RuntimeErrors
        return (OSError,)
    return (OSError, SafetensorError)


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hidden_name(dest: Path) -> str:
    return f".{dest.name or 'out'}.{secrets.token_hex(4)}.tmp"


def _follow_umask(path: Path) -> None:
    """Give a written file the mode the umask asks for: some writers (safetensors' Rust writer)
    create their files 0600 whatever the umask, and colleagues could not read a shared model."""
    if path.is_file():
        os.chmod(path, 0o666 & ~current_umask())


def _make_parents(folder: Path, dest: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created (outermost first), for removal on failure."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail with a confusing message
            raise OutputError(dest, f"{probe} is a broken link", errno.ENOENT)
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(dest, f"{probe} is a file, not a folder", errno.ENOTDIR)
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_dirs(created)
            raise OutputError(dest, f"cannot create folder {d}: {reason_of(exc)}", exc.errno) from exc
        created.append(d)
    return created


def _remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def _as_output_error(dest: Path) -> Iterator[None]:
    """Turn a failed write inside the block into an OutputError naming ``dest``."""
    try:
        yield
    except OutputError:
        raise
    except _writer_errors() as exc:
        raise OutputError(dest, reason_of(exc), _errno_of(exc)) from exc


class AtomicFile:
    """One output file, written at ``self.tmp`` and renamed to ``dest`` by :meth:`commit`.

    Creating it checks at once that the destination can be written (parent folders are created,
    a temporary file is made beside it), so a command fails before doing any work.

    Example::

        with AtomicFile("out/tokens.npz") as out:
            with out.open("wb") as f:
                np.savez(f, ids=ids)
            out.commit()
    """

    def __init__(self, dest: str | Path) -> None:
        self.dest = Path(dest)
        if self.dest.is_dir():
            raise OutputError(self.dest, "it is a folder; give a file name", errno.EISDIR)
        self._created = _make_parents(self.dest.parent, self.dest)
        self._done = False
        while True:
            self.tmp = self.dest.parent / _hidden_name(self.dest)
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
            except FileExistsError:
                continue
            except OSError as exc:
                _remove_dirs(self._created)
                raise OutputError(self.dest, reason_of(exc), exc.errno) from exc
            os.close(fd)
            break

    @contextlib.contextmanager
    def open(self, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
        """Open the temporary file; a failed write (a full disk) becomes an OutputError."""
        with _as_output_error(self.dest), open(self.tmp, mode, **kwargs) as f:  # noqa: PTH123
            yield f

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """The temporary path, for writers that take a path; their failures become OutputErrors."""
        with _as_output_error(self.dest):
            yield self.tmp
            _follow_umask(self.tmp)

    def commit(self) -> None:
        """Move the finished file into place (replacing any file of that name)."""
        with _as_output_error(self.dest):
            os.replace(self.tmp, self.dest)
        self._done = True

    def discard(self) -> None:
        """Remove the temporary file and the folders made for it (nothing if committed)."""
        if not self._done:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            _remove_dirs(self._created)
            self._done = True

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


class AtomicDir:
    """A folder of outputs, built in a hidden temporary folder beside ``dest``.

    :meth:`commit` renames the temporary folder to ``dest`` when ``dest`` does not exist. Into an
    existing folder the written files are moved one by one (same-named files are replaced, other
    files are left alone), so a command never deletes what it did not write. Without
    ``commit()`` everything written is removed.
    """

    def __init__(self, dest: str | Path) -> None:
        self.dest = Path(dest)
        if self.dest.exists() and not self.dest.is_dir():
            raise OutputError(self.dest, "it exists and is a file, not a folder", errno.ENOTDIR)
        self._merge = self.dest.is_dir()
        self._created: list[Path] = [] if self._merge else _make_parents(self.dest.parent, self.dest)
        where = self.dest if self._merge else self.dest.parent
        self._names: list[str] = []
        self._done = False
        while True:
            self.tmp = where / _hidden_name(self.dest)
            try:
                self.tmp.mkdir(mode=0o777)  # umask applies
            except FileExistsError:
                continue
            except OSError as exc:
                _remove_dirs(self._created)
                raise OutputError(self.dest, reason_of(exc), exc.errno) from exc
            break

    def path(self, name: str) -> Path:
        """Where to write output file ``name`` now (inside the temporary folder)."""
        if self._merge and (self.dest / name).is_dir():
            raise OutputError(self.dest / name, "a folder of that name exists", errno.EISDIR)
        if name not in self._names:
            self._names.append(name)
        return self.tmp / name

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """``path(name)``, with a failed write inside the block reported as an OutputError."""
        path = self.path(name)
        with _as_output_error(self.dest / name):
            yield path
            _follow_umask(path)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.writing(name) as path:
            path.write_bytes(data)

    def write_text(self, name: str, text: str) -> None:
        with self.writing(name) as path:
            path.write_text(text, encoding="utf-8")

    def commit(self) -> None:
        """Move the outputs into place; see the class doc."""
        with _as_output_error(self.dest):
            if self._merge:
                for name in self._names:
                    os.replace(self.tmp / name, self.dest / name)
                self.tmp.rmdir()
            else:
                os.rename(self.tmp, self.dest)
        self._done = True

    def discard(self) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            _remove_dirs(self._created)
            self._done = True

    def __enter__(self) -> AtomicDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()
