"""Which code a process runs: a digest of the package's files, taken when the app starts, so
/api/health tells which release each host serves (a rolling deploy checks it host by host)."""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def code_release(package_dir: Path = PACKAGE_DIR) -> str:
    """12 hex digits of sha256 over each file's path and content (bytecode caches left out)."""
    digest = hashlib.sha256()
    files = sorted(path for path in package_dir.rglob("*")
                   if path.is_file() and "__pycache__" not in path.relative_to(package_dir).parts)
    for path in files:
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


if __name__ == "__main__":
    import sys

    print(code_release(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR))
