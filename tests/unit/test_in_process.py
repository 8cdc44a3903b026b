"""The project's modules run in Ansible's worker process where they would run on this machine
anyway (plugins/in_process.py): the same results as shipped, and shipped wherever that is not so.

A probe module of the test's own, run by the real ansible-playbook through the same action
plugin, once in process and once shipped (CRUDDUR_IN_PROCESS=0)."""

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_playbook

SECRET = "probe-secret-7d1c"

PROBE = textwrap.dedent('''
    import os
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.cruddur_address import WideCidr, normalize

    def main():
        module = AnsibleModule(
            argument_spec=dict(word=dict(type="str", required=True),
                               token=dict(type="str", no_log=True, default=""),
                               how=dict(type="str", default="ok", choices=["ok", "fail", "crash"]),
                               count=dict(type="int", default=1)),
            supports_check_mode=True)
        if module.params["how"] == "crash":
            raise RuntimeError("the probe crashed on purpose")
        if module.params["how"] == "fail":
            module.fail_json(msg="the probe failed on purpose with " + module.params["token"])
        scratch = os.path.join(module.tmpdir, "scratch")
        with open(scratch, "w") as handle:
            handle.write("x")
        module.exit_json(changed=not module.check_mode, word=module.params["word"] * module.params["count"],
                         scratch=scratch,
                         check_mode=module.check_mode, env=os.environ.get("PROBE_ENV", ""),
                         echoed=module.params["token"], cidr=wide("10.0.0.0/8"))

    def wide(cidr):
        try:
            return normalize(cidr, False)
        except WideCidr as exc:
            return str(exc)

    if __name__ == "__main__":
        main()
''')

PLAYBOOK = textwrap.dedent('''
    - hosts: probe
      gather_facts: false
      tasks:
        - name: Plain
          cruddur_probe: {word: ab, count: 2, token: "''' + SECRET + '''"}
          register: plain
        - name: With an environment
          cruddur_probe: {word: env}
          environment: {PROBE_ENV: from-the-task}
          register: with_env
        - name: Failing
          cruddur_probe: {word: x, how: fail, token: "''' + SECRET + '''"}
          register: failing
          ignore_errors: true
        - name: Crashing
          cruddur_probe: {word: x, how: crash}
          register: crashing
          ignore_errors: true
        - name: Bad argument
          cruddur_probe: {word: x, count: many}
          register: bad
          ignore_errors: true
        - name: In check mode
          cruddur_probe: {word: c}
          check_mode: true
          register: checked
        - name: Delegated to the controller
          cruddur_probe: {word: d}
          delegate_to: localhost
          register: delegated
        - name: A collection's module (community.general)
          community.general.ini_file:
            path: "{{ report }}.ini"
            section: probe
            option: word
            value: "{{ inventory_hostname }}"
            mode: "0600"
          register: collection_module
        - name: An ansible-core module
          ansible.builtin.stat:
            path: "{{ report }}.ini"
            get_checksum: true
          register: core_module
        - name: Commands, one with chdir, in a loop (each item starts in the task's directory)
          ansible.builtin.command:
            argv: [pwd]
            chdir: "{{ item or omit }}"
          loop: ["/", ""]
          register: commands
          changed_when: false
        - name: A command that is not run (creates)
          ansible.builtin.command:
            argv: ["false"]
            creates: "{{ report }}.ini"
          register: created
        - name: A shell command with the task's environment
          ansible.builtin.shell: echo "$PROBE_ENV" | tr a-z A-Z
          environment: {PROBE_ENV: shouted}
          register: shell
          changed_when: false
        - name: A template (the action's stat and copy modules)
          ansible.builtin.template:
            src: "{{ playbook_dir }}/probe.j2"
            dest: "{{ report }}.tpl"
            mode: "0640"
          register: templated
        - name: The same template again
          ansible.builtin.template:
            src: "{{ playbook_dir }}/probe.j2"
            dest: "{{ report }}.tpl"
            mode: "0640"
          register: templated_again
        - name: A file copied (the action puts it in its temporary directory first)
          ansible.builtin.copy:
            src: "{{ playbook_dir }}/probe.j2"
            dest: "{{ report }}.copy"
            mode: "0600"
          register: copied
        - name: Facts (the gather_facts action's setup module)
          ansible.builtin.gather_facts:
            gather_subset: ["!all", "!min", distribution]
          register: facts
        - name: Report
          ansible.builtin.copy:
            dest: "{{ report }}"
            content: "{{ {'plain': plain, 'with_env': with_env, 'failing': failing, 'crashing': crashing,
                          'bad': bad, 'checked': checked, 'delegated': delegated,
                          'collection_module': collection_module, 'core_module': core_module,
                          'commands': commands, 'created': created, 'shell': shell, 'templated': templated,
                          'templated_again': templated_again, 'copied': copied,
                          'distribution': ansible_facts.distribution} | to_json }}"
            mode: "0600"
''')


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    base = tmp_path_factory.mktemp("in-process")
    (base / "library").mkdir()
    (base / "library" / "cruddur_probe.py").write_text(PROBE)
    (base / "action").mkdir()
    # As in plugins/action: the probe's own action, and the one of every module without its own.
    for name in ("cruddur_probe.py", "normal.py"):
        (base / "action" / name).symlink_to(REPO / "plugins" / "in_process.py")
    (base / "site.yml").write_text(PLAYBOOK)
    (base / "probe.j2").write_text("host {{ inventory_hostname }}\n")
    return base


def run(probe, switch: str, interpreter: str, name: str, **env: str):
    report = probe / f"{name}.json"
    inventory = probe / f"{name}.ini"
    inventory.write_text(f"probe ansible_connection=local ansible_python_interpreter={interpreter}\n")
    result = run_playbook(str(probe / "site.yml"), "-i", str(inventory), "-vvvv", extra_vars={"report": str(report)},
                          env={"CRUDDUR_IN_PROCESS": switch,
                               "ANSIBLE_LIBRARY": f"{probe / 'library'}:{REPO / 'library'}",
                               "ANSIBLE_ACTION_PLUGINS": str(probe / "action"), **env})
    assert result.rc == 0, result.output[-3000:]
    return result.output, json.loads(report.read_text())


def comparable(results: dict) -> dict:
    """What a task reports, without what differs by how it ran (where a crash's traceback was)."""
    out = {}
    for name, value in results.items():
        value = dict(value)
        for key in ("module_stderr", "module_stdout", "scratch", "exception", "invocation", "rc", "stdout",
                    "stdout_lines", "stderr", "stderr_lines", "_ansible_no_log"):
            value.pop(key, None)
        out[name] = value
    return out


def without_run_stamps(result: dict) -> dict:
    """A copy of the probe's report without what differs between two runs: times, durations,
    paths, the files' own stamps (times, inode)."""
    result = json.loads(json.dumps(result))
    for item in result["commands"]["results"]:
        for key in ("start", "end", "delta"):
            item.pop(key)
    for key in ("start", "end", "delta"):
        result["shell"].pop(key)
    for key in ("templated", "templated_again", "copied"):
        for field in ("dest", "path", "src", "diff", "invocation"):
            result[key].pop(field, None)
    for key in ("path", "diff", "dest"):
        result["collection_module"].pop(key, None)
    result["core_module"].pop("stat")
    result["created"].pop("msg", None)  # names the run's own file
    result.pop("distribution")
    return result


def test_in_process_results_equal_the_shipped_ones_and_no_log_holds(probe):
    here_out, here = run(probe, "1", sys.executable, "here")
    shipped_out, shipped = run(probe, "0", sys.executable, "shipped")
    assert "cruddur_probe: run in the worker process" in here_out
    assert "cruddur_probe: shipped to the host (CRUDDUR_IN_PROCESS=0)" in shipped_out
    assert "run in the worker process" not in shipped_out
    assert "community.general.ini_file: run in the worker process" in here_out
    assert "ansible.builtin.stat: run in the worker process" in here_out
    # Actions with plugins of their own run their modules here too (cruddur_preload installs it).
    for line in ("ansible.legacy.command (for ansible.builtin.command): run in the worker process",
                 "ansible.legacy.command (for ansible.builtin.shell): run in the worker process",
                 "ansible.legacy.stat (for ansible.builtin.template): run in the worker process",
                 "ansible.legacy.copy (for ansible.builtin.template): run in the worker process",
                 "ansible.legacy.copy (for ansible.builtin.copy): run in the worker process",
                 "(for ansible.builtin.gather_facts): run in the worker process"):
        assert line in here_out, line
    assert "(for ansible.builtin.template): shipped to the host (CRUDDUR_IN_PROCESS=0)" not in shipped_out

    assert here["plain"]["word"] == "abab" and here["plain"]["changed"] is True
    assert here["plain"]["cidr"] != ""  # the project's module_utils was importable in process
    assert here["with_env"]["env"] == "from-the-task"
    # The module's temporary directory is gone after it, as after a shipped module.
    assert not os.path.exists(here["plain"]["scratch"]) and not os.path.exists(shipped["plain"]["scratch"])
    assert here["checked"]["check_mode"] is True and here["checked"]["changed"] is False
    assert here["failing"]["failed"] is True
    assert "the probe failed on purpose" in here["failing"]["msg"]
    assert here["bad"]["failed"] is True and "count" in here["bad"]["msg"]
    assert here["crashing"]["failed"] is True
    assert "the probe crashed on purpose" in json.dumps(here["crashing"])
    assert here["collection_module"]["changed"] is True and shipped["collection_module"]["changed"] is True
    assert here["core_module"]["stat"]["checksum"] == shipped["core_module"]["stat"]["checksum"]
    # The chdir of the first item does not leak into the second (a shipped one starts afresh).
    started = [[r["stdout"] for r in result["commands"]["results"]] for result in (here, shipped)]
    assert started[0] == started[1] and started[0][0] == "/" != started[0][1], started
    for result in (here, shipped):
        assert result["commands"]["results"][0]["stdout_lines"] == ["/"]
        assert result["created"]["changed"] is False and "skipped" in result["created"]["stdout"]
        assert result["created"].pop("msg").startswith("Did not run command since")  # names its own file
        assert result["shell"]["stdout"] == "SHOUTED"
        assert result["templated"]["changed"] is True and result["templated_again"]["changed"] is False
        assert result["templated"]["mode"] == "0640" and result["copied"]["mode"] == "0600"
        assert result["copied"]["checksum"] == hashlib.sha1(b"host {{ inventory_hostname }}\n").hexdigest()  # noqa: S324
        assert result["templated"]["checksum"] == hashlib.sha1(b"host probe\n").hexdigest()  # noqa: S324
    distributions = {here["distribution"], shipped["distribution"]}
    assert len(distributions) == 1 and "" not in distributions
    assert comparable(without_run_stamps(here)) == comparable(without_run_stamps(shipped))

    # The no_log argument is masked in what the module returns and never printed, at -vvvv.
    assert here["plain"]["echoed"] != SECRET and here["plain"]["echoed"] == shipped["plain"]["echoed"]
    assert SECRET not in here["failing"]["msg"]
    assert SECRET not in here_out and SECRET not in shipped_out


OTHER_PYTHON = "/usr/bin/python3"  # not the playbook's own: every module is shipped to it


@pytest.fixture(scope="module")
def shipped_to_another_python(probe):
    """The probe run with another interpreter (shipped, with bytecode: plugins/shipped_bytecode.py)."""
    return run(probe, "1", OTHER_PYTHON, "other")


# One worker runs both tests that use the run above, so it is made once.
@pytest.mark.xdist_group("in-process-probe")
def test_another_interpreter_is_shipped_to_and_a_delegate_is_judged_by_its_own(shipped_to_another_python):
    other = OTHER_PYTHON
    output, results = shipped_to_another_python
    assert f"<probe> cruddur_probe: shipped to the host (its interpreter is {other}" in output
    assert results["plain"]["word"] == "abab"
    # Delegated to the controller (implicit localhost, the playbook's own Python): in process.
    assert "<localhost> cruddur_probe: run in the worker process" in output
    assert results["delegated"]["word"] == "d"


@pytest.mark.xdist_group("in-process-probe")
def test_shipped_results_are_the_same_with_and_without_bytecode(probe, shipped_to_another_python):
    with_output, with_pyc = shipped_to_another_python
    without_output, without_pyc = run(probe, "1", OTHER_PYTHON, "without-pyc", CRUDDUR_SHIPPED_BYTECODE="0")
    for output in (with_output, without_output):
        assert f"cruddur_probe: shipped to the host (its interpreter is {OTHER_PYTHON}" in output
    assert with_pyc["plain"]["word"] == "abab" and with_pyc["plain"]["cidr"] != ""
    assert with_pyc["failing"]["failed"] and "the probe failed on purpose" in with_pyc["failing"]["msg"]
    assert "the probe crashed on purpose" in str(with_pyc["crashing"])
    assert comparable(without_run_stamps(with_pyc)) == comparable(without_run_stamps(without_pyc))


def test_every_project_module_has_the_action_and_nothing_else_does():
    # normal.py: the action of every module without one of its own (community.postgresql's, ...).
    modules = {path.name for path in (REPO / "library").glob("*.py")} | {"normal.py"}
    actions = {path.name for path in (REPO / "plugins" / "action").glob("*.py")}
    assert actions == modules
    for name in actions:
        link = REPO / "plugins" / "action" / name
        assert link.is_symlink() and link.resolve() == REPO / "plugins" / "in_process.py", name


NESTED = '''
- hosts: localhost
  gather_facts: false
  vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
  tasks:
    - name: A command that runs ansible-playbook (as Molecule's destroy step does)
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python | dirname }}/ansible-playbook", "{{ inner }}", -i, "localhost,"]
      changed_when: false
'''


def test_a_command_run_in_process_gets_a_standard_input_of_its_own(tmp_path):
    """Run from a background job (stdin /dev/null, which Ansible's main process makes
    non-blocking), the worker's standard input is not what a command should inherit: a nested
    ansible-playbook refused it ("requires blocking IO") until the module got its own."""
    import subprocess

    (tmp_path / "inner.yml").write_text("- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
    (tmp_path / "outer.yml").write_text(NESTED)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "CRUDDUR_IN_PROCESS": "1"}
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(tmp_path / "outer.yml"),
                          "-e", f"inner={tmp_path / 'inner.yml'}", "-vvv"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO, env=env, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "ansible.legacy.command (for ansible.builtin.command): run in the worker process" in run.stdout
