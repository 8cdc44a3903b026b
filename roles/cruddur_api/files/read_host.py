"""What the API role would otherwise ask one module each, read in one run of the target's
Python: the Debian packages it needs that are not installed, the service's group and user, its
directories, the packages in its virtualenv, the deployed code (every path under the code's
directory with owner, mode and SHA-1, as ansible.builtin.find reports them), and the files the
role templates (SHA-1, mode, owner, group).

Argument: a JSON object {"debs": [name, ...], "group": name, "user": name, "paths": [path, ...],
"venv": path, "code": path, "files": [path, ...]}. Prints a JSON object; a missing group, user, path or virtualenv is
null. Reads only."""

import glob
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
from importlib import metadata


def group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_group(name):
    try:
        return {"name": grp.getgrnam(name).gr_name}
    except KeyError:
        return None


def read_user(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return {"group": group_name(entry.pw_gid), "home": entry.pw_dir, "shell": entry.pw_shell}


def read_path(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return {"isdir": stat.S_ISDIR(info.st_mode), "mode": "%04o" % stat.S_IMODE(info.st_mode),
            "owner": user_name(info.st_uid), "group": group_name(info.st_gid)}


def read_packages(venv):
    """Distribution name -> version; None without a usable virtualenv."""
    sites = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    if not sites or not os.access(os.path.join(venv, "bin", "python"), os.X_OK):
        return None
    return {dist.metadata["Name"]: dist.version for dist in metadata.distributions(path=sites)}


def missing_debs(names):
    """The packages dpkg does not record as installed (its own record: milliseconds, where apt
    opens the whole package cache)."""
    listed = subprocess.run(["dpkg-query", "--show", "--showformat=${db:Status-Abbrev} ${Package}\n", *names],
                            capture_output=True, text=True, check=False).stdout
    installed = {line.split()[-1] for line in listed.splitlines() if line.startswith("ii ")}
    return [name for name in names if name not in installed]


def read_tree(top):
    """Every path under `top` with the fields the role compares (find's names for them)."""
    entries = []
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            entry = {"path": path, "isdir": stat.S_ISDIR(info.st_mode), "mode": "%04o" % stat.S_IMODE(info.st_mode),
                     "pw_name": user_name(info.st_uid), "gr_name": group_name(info.st_gid)}
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    entry["checksum"] = hashlib.sha1(handle.read()).hexdigest()  # noqa: S324 (a change check)
            entries.append(entry)
    return entries


def read_file(path):
    try:
        info = os.lstat(path)
        with open(path, "rb") as handle:
            digest = hashlib.sha1(handle.read()).hexdigest()  # noqa: S324 (a change check)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    return {"sha1": digest, "mode": "%04o" % stat.S_IMODE(info.st_mode),
            "owner": user_name(info.st_uid), "group": group_name(info.st_gid)}


want = json.loads(sys.argv[1])
print(json.dumps({
    "debs_missing": missing_debs(want["debs"]),
    "group": read_group(want["group"]),
    "user": read_user(want["user"]),
    "paths": {path: read_path(path) for path in want["paths"]},
    "packages": read_packages(want["venv"]),
    "deployed": read_tree(want["code"]),
    "files": {path: read_file(path) for path in want["files"]},
}))
