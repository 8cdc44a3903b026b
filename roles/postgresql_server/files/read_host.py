"""What the postgresql_server role would otherwise ask one module each, read in one run of the
host's Python: the packages dpkg does not record as installed, the clusters (pg_lsclusters'
text), the files the role manages (SHA-1, mode, owner, group; null when absent), the port lines
of postgresql.conf, and whether the service starts at boot.

Argument: a JSON object {"debs": [name, ...], "files": [path, ...], "postgresql_conf": path,
"service": name, "systemd": bool}.
Prints a JSON object. Reads only."""

import glob
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys


def missing_debs(names):
    listed = subprocess.run(["dpkg-query", "--show", "--showformat=${db:Status-Abbrev} ${Package}\n", *names],
                            capture_output=True, text=True, check=False).stdout
    installed = {line.split()[-1] for line in listed.splitlines() if line.startswith("ii ")}
    return [name for name in names if name not in installed]


def clusters():
    if shutil.which("pg_lsclusters") is None:
        return ""
    return subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False).stdout


def name_of(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def read_file(path):
    try:
        info = os.lstat(path)
        with open(path, "rb") as handle:
            digest = hashlib.sha1(handle.read()).hexdigest()  # noqa: S324 (a change check)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return {"sha1": digest, "mode": "%04o" % stat.S_IMODE(info.st_mode),
            "owner": name_of(pwd.getpwuid, info.st_uid), "group": name_of(grp.getgrgid, info.st_gid)}


def port_lines(path):
    """The lines lineinfile's regexp for the port would match."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\n") for line in handle if re.match(r"^#?\s*port\s*=", line)]
    except FileNotFoundError:
        return None


def enabled(service, systemd):
    """Whether the service starts at boot: systemd's verdict, or an init script's start link."""
    if systemd:
        return subprocess.run(["systemctl", "is-enabled", service], capture_output=True, text=True,
                              check=False).stdout.strip() == "enabled"
    return any(glob.glob(f"/etc/rc{level}.d/S??{service}") for level in "2345")


want = json.loads(sys.argv[1])
print(json.dumps({
    "debs_missing": missing_debs(want["debs"]),
    "clusters": clusters(),
    "files": {path: read_file(path) for path in want["files"]},
    "port_lines": port_lines(want["postgresql_conf"]),
    "enabled": enabled(want["service"], want["systemd"]),
}))
