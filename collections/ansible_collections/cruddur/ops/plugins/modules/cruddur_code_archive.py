#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the given files of a source tree into one gzip'd tar, owned by root, mode 0644."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_code_archive
author: cruddur-ops contributors (@cruddur-ops)
short_description: Pack files of a tree into one tar.gz to unpack on a host in one transfer
description:
  - Writes I(dest), a gzip'd tar of I(files) (paths relative to I(src_dir)), each member a
    regular file owned by root:root (uid and gid 0) with mode 0644 and the time of packing, as
    ansible.builtin.copy would leave them. Directories are not members; they must exist where
    the archive is unpacked.
  - Runs on the controller, beside ansible.builtin.unarchive - one transfer and one module run on
    the host instead of one copy per file (about 1 s each over the docker connection).
  - A path that escapes I(src_dir), is absolute, or is not a regular file is refused.
options:
  src_dir:
    description: The tree the paths are relative to.
    type: path
    required: true
  files:
    description: Paths of the files to pack, relative to I(src_dir).
    type: list
    elements: str
    required: true
  dest:
    description: Where to write the archive (overwritten).
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Pack the files that differ on the host
  cruddur.ops.cruddur_code_archive:
    src_dir: "{{ playbook_dir }}/../files/api"
    files: [cruddur_api/app.py, cruddur_api/db.py]
    dest: /tmp/cruddur-api-code.tar.gz
  delegate_to: localhost
"""

RETURN = r"""
files:
  description: The members, in the order they were packed.
  type: list
  elements: str
  returned: success
"""

import os
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule


class ArchiveInputError(Exception):
    pass


def pack(src_dir, files, dest):
    root = os.path.realpath(src_dir)
    now = int(time.time())
    members = sorted(dict.fromkeys(files))
    with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name in members:
            path = os.path.realpath(os.path.join(root, name))
            if os.path.isabs(name) or os.path.commonpath([root, path]) != root:
                raise ArchiveInputError(f"{name} is not inside {src_dir}")
            if not os.path.isfile(path):
                raise ArchiveInputError(f"{name} is not a regular file in {src_dir}")
            info = tarfile.TarInfo(name)
            info.size = os.path.getsize(path)
            info.mode = 0o644
            info.mtime = now
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as handle:
                archive.addfile(info, handle)
    return members


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src_dir=dict(type="path", required=True),
            files=dict(type="list", elements="str", required=True),
            dest=dict(type="path", required=True),
        ),
        supports_check_mode=False,
    )
    try:
        members = pack(module.params["src_dir"], module.params["files"], module.params["dest"])
    except (ArchiveInputError, OSError) as exc:
        if os.path.exists(module.params["dest"]):
            os.unlink(module.params["dest"])
        module.fail_json(msg=f"cannot pack {module.params['dest']}: {exc}")
    module.exit_json(changed=True, files=members)


if __name__ == "__main__":
    main()
