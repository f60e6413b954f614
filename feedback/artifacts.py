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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import skops.io as sio

log = logging.getLogger(__name__)

# Types skops does not trust by default but that the built-in pipelines contain.
EXTRA_TRUSTED_TYPES = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)


class ArtifactError(Exception):
    """A model file is missing, tampered with, or holds a type that is not allowed."""


@dataclass(frozen=True)
class StoredArtifact:
    path: str
    sha256: str
    size: int


def save(model: Any, folder: Path) -> StoredArtifact:
    """Serialise `model` with skops into `folder`, named by its digest, written atomically."""
    data = sio.dumps(model)
    digest = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.skops"
    if not target.exists():
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    return StoredArtifact(path=str(target), sha256=digest, size=len(data))


def read_verified(path: str | Path, sha256: str) -> bytes:
    """Read a model file and check it is byte-for-byte the one the service wrote."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ArtifactError(f"model file {path} cannot be read: {error}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        log.error("model file %s refused: sha256 %s, expected %s", path, actual, sha256)
        raise ArtifactError(f"model file {path} does not match its recorded sha256")
    return data


def load(path: str | Path, sha256: str, extra_trusted: Iterable[str] = ()) -> Any:
    """Verify the digest, refuse unknown types, then build the model with skops."""
    data = read_verified(path, sha256)
    allowed = EXTRA_TRUSTED_TYPES | frozenset(extra_trusted)
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as error:  # a corrupt archive raises many different errors
        raise ArtifactError(f"model file {path} is not a valid skops file: {error}") from error
    refused = sorted(untrusted - allowed)
    if refused:
        log.error("model file %s refused: untrusted types %s", path, refused)
        raise ArtifactError(f"model file {path} contains types that are not allowed: {refused}")
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as error:
        raise ArtifactError(f"model file {path} could not be loaded: {error}") from error
