#!/usr/bin/python
"""Build a byte-for-byte reproducible Lambda deployment zip."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_lambda_zip
short_description: Build a reproducible zip from directories (same inputs, same bytes)
description:
  - Puts every file of I(sources) at the root of the zip, in sorted order, with a fixed
    timestamp (1980-01-01) and fixed permissions (0644, or 0755 for executables), so unchanged
    inputs always give the same bytes whatever their mtimes, owners or umask.
  - Skips bytecode caches. Two sources holding the same path is an error.
  - Rewrites I(dest) only when the bytes differ; C(changed) says whether they did.
options:
  sources:
    description: Directories whose contents go to the zip's root, in this order.
    type: list
    elements: path
    required: true
  dest:
    description: Path of the zip to write.
    type: path
    required: true
  files:
    description: Single files to add, name in the zip to path (e.g. a CA bundle under a fixed name).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Build the function package
  cruddur_lambda_zip:
    sources: [files/lambda/cruddur_post_confirmation, build/lambda/deps]
    dest: build/lambda/cruddur-post-confirmation.zip
"""

RETURN = r"""
dest:
  description: Absolute path of the zip.
  type: str
  returned: always
sha256:
  description: Hex SHA-256 of the zip.
  type: str
  returned: always
code_sha256:
  description: Base64 SHA-256 of the zip, as Lambda reports it (CodeSha256).
  type: str
  returned: always
size:
  description: Size of the zip in bytes.
  type: int
  returned: always
files:
  description: Number of files in the zip.
  type: int
  returned: always
"""

import base64
import hashlib
import io
import os
import stat
import tempfile
import zipfile

from ansible.module_utils.basic import AnsibleModule

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")


class ZipInputError(Exception):
    pass


def collect(sources, files=None):
    """Return {arcname: path} for every file of the sources, and the single files."""
    entries = {}
    for arcname, path in (files or {}).items():
        if not os.path.isfile(path):
            raise ZipInputError(f"{path} (for {arcname}) does not exist")
        entries[arcname] = path
    for source in sources:
        if not os.path.isdir(source):
            raise ZipInputError(f"source directory {source} does not exist")
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                if name.endswith(SKIPPED_SUFFIXES):
                    continue
                path = os.path.join(root, name)
                arcname = os.path.relpath(path, source).replace(os.sep, "/")
                if arcname in entries:
                    raise ZipInputError(f"{arcname} is in both {entries[arcname]} and {path}")
                entries[arcname] = path
    if not entries:
        raise ZipInputError("the sources hold no files")
    return entries


def build(sources, files=None):
    """The zip's bytes and its file count."""
    entries = collect(sources, files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname in sorted(entries):
            path = entries[arcname]
            mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
            info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the building machine
            with open(path, "rb") as handle:
                archive.writestr(info, handle.read(), compresslevel=9)
    return buffer.getvalue(), len(entries)


def write_atomically(dest, data):
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".zip-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sources=dict(type="list", elements="path", required=True),
            dest=dict(type="path", required=True),
            files=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    try:
        data, count = build(module.params["sources"], module.params["files"])
    except (ZipInputError, OSError) as exc:
        module.fail_json(msg=f"cannot build {module.params['dest']}: {exc}")
    dest = module.params["dest"]
    current = None
    if os.path.exists(dest):
        with open(dest, "rb") as handle:
            current = handle.read()
    changed = current != data
    if changed and not module.check_mode:
        write_atomically(dest, data)
    digest = hashlib.sha256(data).digest()
    module.exit_json(
        changed=changed,
        dest=os.path.abspath(dest),
        sha256=digest.hex(),
        code_sha256=base64.b64encode(digest).decode(),
        size=len(data),
        files=count,
    )


if __name__ == "__main__":
    main()
