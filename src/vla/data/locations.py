"""Where prepared datasets live: a local path, or a URL on any fsspec filesystem (s3://, gs://, hf://, ...).

OXE-scale shard sets (about a terabyte) sit in object storage on most clusters, so readers take a
:data:`Location`: a :class:`pathlib.Path` for local paths (read exactly as before, with the
built-in ``open``), or a :class:`UrlPath` for anything with a ``<protocol>://`` prefix, read
through fsspec. :class:`UrlPath` offers the few ``Path`` methods the readers use (``/``,
``name``, ``is_file``, ``open``, ``read_bytes``, ``read_text``), so the reading code is the same
for both and every error message names the URL. Files are streamed: ``open`` returns fsspec's
buffered, seekable file (read-ahead blocks of the backend's default size); nothing is copied to
local disk. The filesystem comes from fsspec's per-process instance cache (rebuilt after a fork),
so a ``UrlPath`` carries only its URL and pickles into DataLoader workers as a string.

Transient read errors: the backends retry some themselves (s3fs, gcsfs and huggingface_hub
retry throttling and 5xx responses); an error that outlasts those retries propagates, with a
note naming the URL, and stops the run, which resumes exactly from its last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec
from fsspec.core import split_protocol, url_to_fs


@dataclass(frozen=True)
class UrlPath:
    """A file or directory on an fsspec filesystem, named by its URL (``s3://bucket/oxe/bridge_orig``)."""

    url: str

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, name: str) -> UrlPath:
        return UrlPath(f"{self.url.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rpartition("/")[2]

    def resolve(self) -> UrlPath:
        """URLs are absolute already (``Path.resolve``'s counterpart, for records of where data came from)."""
        return self

    def is_file(self) -> bool:
        """True for an existing file; False when nothing is there. Other errors (credentials, network) raise.

        fsspec's own ``isfile`` answers False for any error, which would report a denied bucket as a
        missing dataset.
        """
        fs, path = url_to_fs(self.url)
        try:
            return fs.info(path)["type"] == "file"
        except FileNotFoundError:
            return False
        except OSError as err:
            err.add_note(f"while looking up {self.url}")
            raise

    def open(self, mode: str = "rb") -> IO[bytes]:
        if mode != "rb":
            raise ValueError(f"{self.url}: only reading ('rb') is supported, got mode {mode!r}")
        fs, path = url_to_fs(self.url)
        try:
            return fs.open(path, "rb")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"missing {self.url}") from err
        except OSError as err:
            err.add_note(f"while opening {self.url}")
            raise

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def file_names(self) -> set[str]:
        """Names of the files directly inside this directory, in one listing (one request, not one per file)."""
        fs, path = url_to_fs(self.url)
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return set()
        except OSError as err:
            err.add_note(f"while listing {self.url}")
            raise
        return {entry["name"].rstrip("/").rpartition("/")[2] for entry in entries if entry["type"] == "file"}


Location = Path | UrlPath


def is_url(location: str | Path | UrlPath) -> bool:
    """``<protocol>://...`` strings (and :class:`UrlPath`) are URLs; everything else is a local path."""
    return isinstance(location, UrlPath) or (isinstance(location, str) and "://" in location)


def as_location(location: str | Path | UrlPath) -> Location:
    """A local path as :class:`Path` (unchanged behaviour), a URL as :class:`UrlPath`.

    The URL's protocols are checked here, so a missing backend package fails at once, naming the
    URL and the package to install (fsspec's message, e.g. "Install s3fs to access S3").
    """
    if isinstance(location, UrlPath | Path):
        return location
    if not is_url(location):
        return Path(location)
    for part in location.split("::"):  # fsspec chains, e.g. simplecache::s3://bucket/oxe
        protocol, _ = split_protocol(part)
        if protocol is None:
            continue
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as err:
            raise type(err)(f"cannot read {location}: {err}") from err
    return UrlPath(location)


def missing_files(directory: Location, names: Iterable[str]) -> list[str]:
    """The ``names`` that are not files in ``directory``, in order; a URL directory is listed once."""
    if isinstance(directory, UrlPath):
        present = directory.file_names()
        return [name for name in names if name not in present]
    return [name for name in names if not (directory / name).is_file()]
