"""The login options every PostgreSQL module of cruddur.ops shares (module_utils/cruddur_postgres.py,
postgres_argument_spec()). Named as community.postgresql names them, so one module_defaults entry
(group/cruddur.ops.postgres beside group/community.postgresql.all) serves both."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_host:
    description: Host name or address of the PostgreSQL server.
    type: str
    default: 127.0.0.1
  login_port:
    description: TCP port of the PostgreSQL server.
    type: int
    default: 5432
  login_user:
    description: Role to log in as.
    type: str
    default: postgres
  login_password:
    description: Password of I(login_user). Never logged or returned.
    type: str
    default: ""
  ssl_mode:
    description:
      - libpq's C(sslmode) for the connection.
      - C(verify-full) with I(ca_cert) is what a connection to RDS should use.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description: CA bundle the server's certificate is checked against (libpq's C(sslrootcert)).
    type: path
    aliases: [ssl_rootcert]
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
requirements:
  - psycopg2
"""
