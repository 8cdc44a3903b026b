#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build a byte-for-byte reproducible Lambda deployment zip."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_lambda_zip
author: cruddur-ops contributors (@cruddur-ops)
short_description: Build a reproducible zip from directories (same inputs, same bytes)
description:
  - Puts every file of I(sources) at the root of the zip, in sorted order, with a fixed
    timestamp (1980-01-01) and fixed permissions (0644, or 0755 for executables), so unchanged
    inputs always give the same bytes whatever their mtimes, owners or umask.
  - Skips bytecode caches. Two sources holding the same path is an error.
  - Rewrites I(dest) only when the bytes differ; C(changed) says whether they did. A zip already
    at I(dest) that this module's format wrote from the same inputs (its comment names the format,
    and every member's name, mode, timestamp, size and CRC-32 match the inputs, and its data
    checks out) is not compressed again - that is most of a converged run's time otherwise.
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
import zlib

from ansible.module_utils.basic import AnsibleModule

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Written as the zip's comment: a zip with another comment (another level, another layout) is
# rebuilt. Level 6 (zlib's default): level 9 took three times as long for 0.5 % less.
FORMAT = b"cruddur-lambda-zip/2 deflate-6"
COMPRESS_LEVEL = 6
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


def member_info(arcname, path):
    """The ZipInfo a file gets: fixed time, Unix, 0755 for executables and 0644 otherwise."""
    mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
    info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the building machine
    return info


def build(sources, files=None):
    """The zip's bytes and its file count."""
    entries = collect(sources, files)
    return zip_bytes(entries), len(entries)


def zip_bytes(entries):
    """The zip of collect()'s entries, members in sorted order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = FORMAT
        for arcname in sorted(entries):
            with open(entries[arcname], "rb") as handle:
                archive.writestr(member_info(arcname, entries[arcname]), handle.read(),
                                 compresslevel=COMPRESS_LEVEL)
    return buffer.getvalue()


def built_from(dest, entries):
    """The bytes of the zip at dest when zip_bytes(entries) would give exactly them again (same
    format comment, members, modes, times, sizes and CRC-32s, and data that tests good), else None.

    Reading the inputs' CRC-32s and testing the zip's data costs a small part of compressing."""
    try:
        with zipfile.ZipFile(dest) as archive:
            if archive.comment != FORMAT:
                return None
            infos = archive.infolist()
            if [info.filename for info in infos] != sorted(entries):
                return None
            for info in infos:
                path = entries[info.filename]
                want = member_info(info.filename, path)
                with open(path, "rb") as handle:
                    data = handle.read()
                if ((info.date_time, info.external_attr, info.compress_type, info.create_system,
                     info.file_size, info.CRC)
                        != (want.date_time, want.external_attr, want.compress_type, want.create_system,
                            len(data), zlib.crc32(data))):
                    return None
            if archive.testzip() is not None:
                return None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error):
        return None
    with open(dest, "rb") as handle:
        return handle.read()


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
    dest = module.params["dest"]
    try:
        entries = collect(module.params["sources"], module.params["files"])
        data = built_from(dest, entries)
        changed = data is None
        if changed:
            data = zip_bytes(entries)
    except (ZipInputError, OSError) as exc:
        module.fail_json(msg=f"cannot build {dest}: {exc}")
    if changed and not module.check_mode:
        write_atomically(dest, data)
    digest = hashlib.sha256(data).digest()
    module.exit_json(
        changed=changed,
        dest=os.path.abspath(dest),
        sha256=digest.hex(),
        code_sha256=base64.b64encode(digest).decode(),
        size=len(data),
        files=len(entries),
    )


if __name__ == "__main__":
    main()
