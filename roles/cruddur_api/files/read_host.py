"""What the API role would otherwise ask one module each (the service's group and user, its
directories, the packages in its virtualenv), read in one run of the target's Python.

Argument: a JSON object {"group": name, "user": name, "paths": [path, ...], "venv": path}.
Prints a JSON object; a missing group, user, path or virtualenv is null. Reads only."""

import glob
import grp
import json
import os
import pwd
import stat
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


want = json.loads(sys.argv[1])
print(json.dumps({
    "group": read_group(want["group"]),
    "user": read_user(want["user"]),
    "paths": {path: read_path(path) for path in want["paths"]},
    "packages": read_packages(want["venv"]),
}))
