"""Model files: written by the service with skops, verified by sha256, loaded with an allowlist.

Nothing here ever unpickles. A file whose digest does not match, or that names a type
outside the allowlist, is refused before any of its objects is built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import skops.io as sio

log = logging.getLogger(__name__)

# scikit-learn's own types that skops does not trust by default: the built-in histogram
# gradient boosting needs the first, every tree ensemble (random forests, gradient boosting,
# a user factory's decision tree) the second. Anything else a project trusts by name.
EXTRA_TRUSTED_TYPES = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)


class ArtifactError(Exception):
    """A model file is missing, tampered with, or holds a type that is not allowed."""


@dataclass(frozen=True)
class StoredArtifact:
    path: str
    sha256: str
    size: int


def save(model: Any, folder: Path, extra_trusted: Iterable[str] = ()) -> StoredArtifact:
    """Serialise `model` with skops into `folder`, named by its digest, written atomically.

    The bytes are checked against the allowlist first, so a model the loader would refuse
    is never stored. A file already there under the same name is reused only if it verifies;
    a new file holds exactly the bytes hashed, written to a temporary file, fsynced and
    renamed into place (reading it back would only read the page cache it came from). Either
    way the file verifies on return.

    Raises:
        ArtifactError: the model holds types outside the allowlist.
    """
    data = sio.dumps(model)
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool:
        hashing = pool.submit(_sha256, data)  # hashlib lets go of the GIL meanwhile
        refused = sorted(untrusted_types(data, "the new model") - allowed_types(extra_trusted))
        digest = hashing.result()
    if refused:
        raise ArtifactError(
            f"the fitted pipeline contains types that are not trusted: {refused}; "
            "add them to the project's trusted_types if you wrote them"
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.skops"
    if not _verifies(target, digest):
        _write_atomically(folder, target, data)
    return StoredArtifact(path=str(target), sha256=digest, size=len(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verifies(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def _write_atomically(folder: Path, target: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, rename over the target, then fsync the folder."""
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_verified(path: str | Path, sha256: str) -> bytes:
    """Read a model file and check it is byte-for-byte the one the service wrote."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        log.error("model file %s refused: %s", path, error)
        raise ArtifactError(f"model file {path} cannot be read: {error}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        log.error("model file %s refused: sha256 %s, expected %s", path, actual, sha256)
        raise ArtifactError(f"model file {path} does not match its recorded sha256")
    return data


def allowed_types(extra_trusted: Iterable[str] = ()) -> frozenset[str]:
    """Types trusted beyond skops' defaults: the built-ins' and a project's own."""
    return EXTRA_TRUSTED_TYPES | frozenset(extra_trusted)


def untrusted_types(data: bytes, name: str) -> set[str]:
    """The types in a skops file that skops does not trust by default (nothing is built)."""
    try:
        return set(sio.get_untrusted_types(data=data))
    except Exception as error:  # a corrupt archive or a pickle raises many different errors
        log.error("model file %s refused: not a valid skops file: %s", name, error)
        raise ArtifactError(f"model file {name} is not a valid skops file: {error}") from error


def load(path: str | Path, sha256: str, extra_trusted: Iterable[str] = ()) -> Any:
    """Verify the digest, refuse unknown types, then build the model with skops."""
    return build(read_verified(path, sha256), path, extra_trusted)


def build(data: bytes, path: str | Path, extra_trusted: Iterable[str] = ()) -> Any:
    """Refuse unknown types, then build the model from bytes `read_verified` returned."""
    untrusted = untrusted_types(data, str(path))
    refused = sorted(untrusted - allowed_types(extra_trusted))
    if refused:
        log.error("model file %s refused: untrusted types %s", path, refused)
        raise ArtifactError(f"model file {path} contains types that are not allowed: {refused}")
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as error:
        log.error("model file %s refused: %s", path, error)
        raise ArtifactError(f"model file {path} could not be loaded: {error}") from error
