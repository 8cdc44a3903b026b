"""plugins/callback/cruddur_preload.py: what a module imports when it loads is imported once in
ansible-playbook's own process, so the workers that run modules in process inherit it."""

import textwrap

from conftest import REPO, run_playbook

import importlib.util

spec = importlib.util.spec_from_file_location("cruddur_preload", REPO / "plugins" / "callback" / "cruddur_preload.py")
preload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preload)


def test_the_imports_a_module_makes_when_it_loads_and_only_those(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(textwrap.dedent('''
        from __future__ import annotations
        import json, os
        from ansible.module_utils.basic import AnsibleModule
        from ..module_utils.botocore import is_boto3_error_code
        from ansible_collections.other.coll.plugins.module_utils.x import y
        try:
            import psycopg2
            from yoyo.migrations import read_sql_migration
        except ImportError:
            pass
        if True:
            import boto3.session

        def main():
            import requests  # deferred on purpose: not preloaded
            lambda: __import__("nothing")
    '''))
    names = preload.module_imports(str(source), "ansible_collections.amazon.aws.plugins.modules.mod")
    assert names == ["ansible_collections.amazon.aws.plugins.module_utils.botocore",
                     "ansible_collections.other.coll.plugins.module_utils.x", "psycopg2", "yoyo", "boto3"]
    # A module from a library directory has no package: its relative imports are left alone.
    assert "ansible_collections.amazon.aws.plugins.module_utils.botocore" not in preload.module_imports(str(source), None)


PLAYBOOK = '''
- hosts: localhost
  gather_facts: false
  vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
  tasks:
    - name: A PostgreSQL module against a port nothing listens on
      community.postgresql.postgresql_ping: {login_host: 127.0.0.1, login_port: 9, login_user: nobody, login_db: none}
      register: ping
    - name: It ran, and reported that the server is not there
      ansible.builtin.assert:
        that: not ping.is_available
'''


def test_the_parent_imports_a_modules_libraries_before_its_task_unless_switched_off(tmp_path):
    playbook = tmp_path / "ping.yml"
    playbook.write_text(PLAYBOOK)
    line = ("cruddur_preload: imported ansible_collections.community.postgresql.plugins.module_utils.database"
            " for community.postgresql.postgresql_ping")
    on = run_playbook(str(playbook), "-vvvv", env={"CRUDDUR_IN_PROCESS": "1"})
    assert on.rc == 0, on.output[-3000:]
    assert line in on.output
    off = run_playbook(str(playbook), "-vvvv", env={"CRUDDUR_IN_PROCESS": "0"})
    assert off.rc == 0, off.output[-3000:]
    assert "cruddur_preload: imported" not in off.output
