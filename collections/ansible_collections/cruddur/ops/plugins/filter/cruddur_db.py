"""The one place that turns the inventory's database definition into what clients need.

`cruddur_db_connection` (one dict per inventory: host, port, name, sslmode, sslrootcert) plus a
login (user, password) becomes:
- `cruddur_pg_url`: the libpq URL (`postgresql://user:password@host:port/name?sslmode=...`), for
  the API's config, the `.env` file and psql;
- `cruddur_pg_login`: the login arguments of community.postgresql modules and of the project's
  own modules (module_defaults).
And `cruddur_privilege_rows` spreads the application roles' grants into one row per privilege.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from ansible.errors import AnsibleFilterError

REQUIRED = ("host", "port", "name")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _checked(connection) -> dict:
    if not isinstance(connection, dict):
        raise AnsibleFilterError(f"the database connection must be a dict, got {type(connection).__name__}")
    missing = [key for key in REQUIRED if not str(connection.get(key, "")).strip()]
    if missing:
        raise AnsibleFilterError(f"the database connection lacks {', '.join(missing)}")
    sslmode = connection.get("sslmode") or "prefer"
    if sslmode not in SSL_MODES:
        raise AnsibleFilterError(f"sslmode {sslmode!r} is not one of {', '.join(SSL_MODES)}")
    if sslmode == "verify-full" and not connection.get("sslrootcert"):
        raise AnsibleFilterError("sslmode verify-full needs sslrootcert (the CA bundle's path)")
    try:
        port = int(connection["port"])
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"port {connection['port']!r} is not a number") from None
    return {**connection, "port": port, "sslmode": sslmode}


def cruddur_pg_url(connection, user, password, name=None) -> str:
    """The libpq URL for `user` on the connection (database `name` if given)."""
    conn = _checked(connection)
    host = conn["host"]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    query = {}
    if conn["sslmode"] != "prefer":
        query["sslmode"] = conn["sslmode"]
    if conn.get("sslrootcert"):
        query["sslrootcert"] = conn["sslrootcert"]
    credentials = quote(str(user), safe="")
    if password:
        credentials += ":" + quote(str(password), safe="")
    url = f"postgresql://{credentials}@{host}:{conn['port']}/{quote(str(name or conn['name']), safe='')}"
    return url + ("?" + urlencode(query, safe="/") if query else "")


def cruddur_pg_login(connection, user, password, db=None) -> dict:
    """community.postgresql login arguments (login_db is left to each task); with `db`, also the
    project's modules' `db` (community.postgresql's own name for it is login_db)."""
    conn = _checked(connection)
    login = {
        "login_host": conn["host"],
        "login_port": conn["port"],
        "login_user": user,
        "login_password": password,
        "ssl_mode": conn["sslmode"],
    }
    if conn.get("sslrootcert"):
        login["ca_cert"] = conn["sslrootcert"]
    if db:
        login["db"] = db
    return login


TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def cruddur_pg_ident(name) -> str:
    """A PostgreSQL identifier, quoted."""
    text = str(name)
    if not text or "\x00" in text:
        raise AnsibleFilterError(f"{name!r} is not a PostgreSQL identifier")
    return '"' + text.replace('"', '""') + '"'


def cruddur_privilege_rows(app_roles) -> list:
    """The application roles' grants ([{name, grants: [{table, privs}]}]) as one row per
    privilege: [{role, table, privilege}], what cruddur_migrations' `privileges` takes."""
    rows = []
    for role in app_roles or []:
        for grant in role.get("grants", []):
            for priv in grant["privs"]:
                priv = str(priv).upper()
                if priv not in TABLE_PRIVILEGES:
                    raise AnsibleFilterError(f"{priv!r} (role {role['name']}) is not a table privilege")
                rows.append({"role": role["name"], "table": grant["table"], "privilege": priv})
    return rows


def cruddur_migration_table(rows) -> list:
    """cruddur_migrations' status rows as aligned text lines (db-status prints them)."""
    table = [("MIGRATION", "STATE", "APPLIED AT", "HOW", "SHA-256")]
    for row in rows or []:
        recorded, current = row.get("recorded_sha256"), row.get("file_sha256")
        if recorded and current and recorded != current:
            checksum = f"{recorded[:12]} / {current[:12]}"
        else:
            checksum = (recorded or current or "")[:12]
        table.append((row["id"], row["state"], (row.get("applied_at") or "-")[:19].replace("T", " "),
                      row.get("how") or "-", checksum))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]


def cruddur_doctor_line(entry: dict) -> str:
    """One db-doctor link as one line: status, link, what was found, and the fix of a failure."""
    line = f"{entry['status'].upper():<4}  {entry['link']:<21} {entry['detail']}"
    if entry["status"] == "fail" and entry.get("fix"):
        line += f"  -> fix: {entry['fix']}"
    return line


class FilterModule:
    def filters(self):
        return {"cruddur_pg_url": cruddur_pg_url, "cruddur_pg_login": cruddur_pg_login,
                "cruddur_doctor_line": cruddur_doctor_line,
                "cruddur_privilege_rows": cruddur_privilege_rows, "cruddur_pg_ident": cruddur_pg_ident,
                "cruddur_migration_table": cruddur_migration_table}
