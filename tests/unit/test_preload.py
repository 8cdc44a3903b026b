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
    tree = preload.ast.parse(source.read_bytes())
    names = preload.imports_of(tree, "ansible_collections.amazon.aws.plugins.modules.mod")
    assert names == ["ansible.module_utils.basic", "ansible_collections.amazon.aws.plugins.module_utils.botocore",
                     "ansible_collections.other.coll.plugins.module_utils.x", "psycopg2", "yoyo", "boto3"]
    # A module from a library directory has no package: its relative imports are left alone.
    assert "ansible_collections.amazon.aws.plugins.module_utils.botocore" not in preload.imports_of(tree, None)


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


def test_the_services_a_module_asks_boto3_for(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(textwrap.dedent('''
        import boto3
        KIND = "s3"  # a string that is a service name, but no client is made of it
        def main(module):
            ec2 = module.client("ec2", retry_decorator=None)
            rds = boto3.client('rds')
            table = boto3.resource("dynamodb")
            clients = [module.client(name) for name in ("lambda", "iam")]
            return ec2, rds, table, clients, KIND
    '''))
    assert preload.services_of(preload.ast.parse(source.read_bytes())) == {"ec2", "rds", "dynamodb", "lambda", "iam"}


SHARED = '''
import importlib.util, json, os, sys
import boto3
from botocore import loaders
spec = importlib.util.spec_from_file_location("p", sys.argv[1])
preload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preload)

plain = loaders.Loader().load_service_model("ec2", "service-2")  # before sharing: its own cache
preload.share_botocore_data()
preload.share_botocore_data()  # twice: still one wrapper, around botocore's own __init__
assert not getattr(loaders.Loader.__init__.__wrapped__, "cruddur_shared", False)
assert preload.load_botocore_services({"ec2", "no-such-service"}) == ["ec2"]

reads = []
load_file = loaders.JSONFileLoader.load_file
def counted(self, path):
    data = load_file(self, path)
    if data is not None:  # a file read and decoded (not a probe for an extras file that is not there)
        reads.append(path)
    return data
loaders.JSONFileLoader.load_file = counted
if os.fork() == 0:  # a worker: a new session, as every AWS module makes one (no request is sent)
    status = 1
    try:
        client = boto3.session.Session().client("ec2", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                                aws_access_key_id="a", aws_secret_access_key="b")
        client.get_paginator("describe_vpcs"), client.get_waiter("security_group_exists")
        same = client.meta.service_model._service_description == plain
        before = list(reads)
        elsewhere = loaders.Loader(extra_search_paths=[os.getcwd()]).load_service_model("ec2", "service-2")
        print(json.dumps({"reads": before, "same": same, "elsewhere_reads": len(reads) - len(before),
                          "equal": elsewhere == plain}), flush=True)
        status = 0
    finally:
        os._exit(status)
_, status = os.wait()
sys.exit(os.waitstatus_to_exitcode(status))
'''


def test_a_forked_worker_makes_an_aws_client_without_reading_botocore_data_again(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SHARED, str(REPO / "plugins" / "callback" / "cruddur_preload.py")],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    seen = json.loads(proc.stdout)
    # The client was made from the data the parent parsed (nothing read), and it is botocore's own.
    assert seen["reads"] == [] and seen["same"] is True
    # A loader configured otherwise (another search path) keeps a cache of its own: it read again.
    assert seen["elsewhere_reads"] > 0 and seen["equal"] is True


PROBE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    # more variables
  tasks:
    - name: What the worker has when the module runs
      probe: {}
      register: probe
    - name: Show it
      ansible.builtin.debug:
        msg: "seen-by-probe={{ probe.seen | to_json(separators=[',', ':']) }}"
"""


def run_probe(tmp_path, module_source: str, play_vars: str = "", args=(), outputs=None) -> dict[str, object]:
    """A module (library/probe.py) run by a playbook reports what it sees in its result's `seen`:
    with the in-process runner on ("1": in the worker) and off ("0": shipped, a process of its own).
    `play_vars` (YAML lines) go into the play's vars; each run's output into `outputs`."""
    import json

    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "probe.py").write_text(module_source)
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PROBE_PLAYBOOK.replace("    # more variables\n", play_vars))
    seen = {}
    for switch in ("1", "0"):
        run = run_playbook(str(playbook), *args, env={"CRUDDUR_IN_PROCESS": switch})
        assert run.rc == 0, run.output[-3000:]
        seen[switch] = json.loads(run.output.rsplit("seen-by-probe=", 1)[1].split()[0].strip("'\""))
        if outputs is not None:
            outputs[switch] = run.output
    return seen


FROZEN_MODULE = """
import gc
from ansible.module_utils.basic import AnsibleModule
module = AnsibleModule(argument_spec={})
module.exit_json(changed=False, seen=gc.get_freeze_count())
"""


def test_the_workers_are_forked_from_a_parent_whose_objects_are_frozen(tmp_path):
    seen = run_probe(tmp_path, FROZEN_MODULE)
    assert seen["1"] > 10000  # the parent's objects (ansible, its plugins, the play), not a handful
    # Switched off, Ansible runs as it does by default: a module in a process of its own.
    assert seen["0"] == 0


JINJA_MODULE = """
import sys
from ansible.module_utils.basic import AnsibleModule
module = AnsibleModule(argument_spec={})
# In the worker, the controller's loaders as the worker has them; shipped, a process with no
# controller code at all.
loader = sys.modules.get("ansible.plugins.loader")
filters = loader.filter_loader._cached_non_collection_wrappers if loader else {}
tests = loader.test_loader._cached_non_collection_wrappers if loader else {}
module.exit_json(changed=False, seen={"filters": sorted(filters), "tests": sorted(tests)})
"""


def test_the_workers_inherit_the_filter_and_test_plugins_the_parent_loaded(tmp_path):
    seen = run_probe(tmp_path, JINJA_MODULE)
    # The module's task templates no filter or test, so the worker loaded none: the parent did,
    # Ansible's own and the project's (plugins/filter) alike.
    assert {"default", "ansible.builtin.default", "cruddur_pg_url"} <= set(seen["1"]["filters"])
    assert {"defined", "ansible.builtin.defined"} <= set(seen["1"]["tests"])
    # Switched off, Ansible runs as it does by default: the module's own process loaded nothing.
    assert seen["0"] == {"filters": [], "tests": []}


COMPILED_MODULE = """
import sys
# Asked before this module imports it: only the parent can have imported it.
utils_before = "ansible.module_utils.cruddur_postgres" in sys.modules
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cruddur_postgres import connect  # the project's own module_utils
module = AnsibleModule(argument_spec={})
action = sys.modules.get("ansible.plugins.action")  # the controller's, in the worker; none shipped
kept = getattr(action.ActionBase, "_cruddur_module_code", {}) if action else {}
module.exit_json(changed=False, seen={"utils_before": utils_before,
                                      "code": sorted(path.rsplit("/", 1)[-1] for path, _, _ in kept)})
"""


def test_the_workers_inherit_the_project_module_utils_their_module_imports(tmp_path):
    seen = run_probe(tmp_path, COMPILED_MODULE)
    # The parent imported the project's module_utils before the fork; the module's code is kept.
    assert seen["1"] == {"utils_before": True, "code": ["probe.py"]}
    # Switched off, Ansible runs as it does by default: the module's own process, nothing in it.
    assert seen["0"] == {"utils_before": False, "code": []}


def test_the_parent_loads_the_action_plugin_and_compiles_the_module_a_task_will_run(tmp_path):
    outputs = {}
    run_probe(tmp_path, COMPILED_MODULE, args=("-vvvv",), outputs=outputs)
    # A module without an action of its own runs under `normal` (plugins/action/normal.py).
    assert "cruddur_preload: loaded action ansible.legacy.normal for probe" in outputs["1"]
    # A debug task forks no worker (plugins/in_parent.py runs it here): nothing is loaded for one.
    assert "run in ansible-playbook's own process, no worker forked" in outputs["1"]
    assert "cruddur_preload: loaded action ansible.builtin.debug" not in outputs["1"]
    assert f"cruddur_preload: compiled {tmp_path / 'library' / 'probe.py'} for probe" in outputs["1"]
    assert "cruddur_preload:" not in outputs["0"]


LOOKUP_MODULE = """
import sys
from ansible.module_utils.basic import AnsibleModule
module = AnsibleModule(argument_spec={})
loader = sys.modules.get("ansible.plugins.loader")  # the controller's, in the worker; none shipped
loaded = sorted(path.rsplit("/", 1)[-1] for path in loader.lookup_loader._module_cache) if loader else []
module.exit_json(changed=False, seen=loaded)
"""
# A variable of the play that the probe's task never templates: only the parent can have loaded
# the lookup it names.
UNUSED_LOOKUP = "    unused_home: \"{{ lookup('ansible.builtin.env', 'HOME') }}\"\n"


def test_the_workers_inherit_the_lookups_the_play_names(tmp_path):
    outputs = {}
    seen = run_probe(tmp_path, LOOKUP_MODULE, play_vars=UNUSED_LOOKUP, args=("-vvvv",), outputs=outputs)
    assert "env.py" in seen["1"]
    assert "cruddur_preload: loaded lookup ansible.builtin.env for play" in outputs["1"]
    # Switched off: the module's own process, with no controller code at all.
    assert seen["0"] == []


def test_a_modules_analysis_is_kept_and_read_back_by_the_next_run(tmp_path, monkeypatch):
    source = tmp_path / "mod.py"
    text = b"import boto3\nfrom ansible.module_utils.basic import AnsibleModule\nCLIENT = boto3.client('ec2')\n"
    source.write_bytes(text)
    private = preload.load_plugin_module("private_cache")
    directory = tmp_path / "modules"
    directory.mkdir(mode=0o700)
    parses = []
    real_parse = preload.ast.parse
    monkeypatch.setattr(preload.ast, "parse", lambda *a, **k: parses.append(a[1]) or real_parse(*a, **k))

    def analyse(data: bytes):
        store = private.Store(str(directory))  # a new run: nothing in memory
        return preload.analysed(store, data, str(source), "ansible_collections.amazon.aws.plugins.modules.mod")

    first = analyse(text)
    assert first[:2] == (["boto3", "ansible.module_utils.basic"], ["ec2"])
    assert first[2].co_filename == str(source)
    assert len(list(directory.iterdir())) == 1 and parses == [str(source)]
    again = analyse(text)
    assert again[:2] == first[:2] and again[2] == first[2] and parses == [str(source)]  # read back
    changed = analyse(text.replace(b"'ec2'", b"'rds'"))  # another source: analysed, a new entry
    assert changed[1] == ["rds"] and len(parses) == 2 and len(list(directory.iterdir())) == 2
    for entry in directory.iterdir():
        entry.write_bytes(b"\x00damaged")
    assert analyse(text)[:2] == first[:2] and len(parses) == 3  # a damaged entry is analysed again
