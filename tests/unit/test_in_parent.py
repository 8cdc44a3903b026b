"""plugins/in_parent.py: a task whose conditions are false, or whose action only computes on the
controller, is settled in ansible-playbook's own process, with the result, output and counts a
worker would have given, and no worker forked."""

import json
import subprocess
import sys

from conftest import REPO, VENV_BIN

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  remote_user: deploy
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    flag: false
  tasks:
    - name: Skipped on a plain variable
      ansible.builtin.debug: {msg: never}
      when: flag | bool
      register: plain
    - name: Skipped on a variable the play context adds
      ansible.builtin.command: /bin/false
      when: ansible_user != 'deploy'
      register: magic
    - name: Skipped, its output hidden
      ansible.builtin.debug: {msg: secret}
      when: flag
      no_log: true
    - name: Skipped include
      ansible.builtin.include_tasks: missing.yml
      when: flag
    - name: Runs, its condition true
      ansible.builtin.set_fact: {ran: true}
      when: not flag
    - name: A loop, judged per item by its worker
      ansible.builtin.debug: {msg: "{{ item }}"}
      loop: [1, 2]
      when: item > 5
    - name: A condition that fails to evaluate
      ansible.builtin.debug: {msg: never}
      when: nowhere_defined.attribute
      ignore_errors: true
      register: broken
    - name: A module runs in its worker
      ansible.builtin.command: /bin/true
      changed_when: false
      when: not flag
    - name: An assert that fails
      ansible.builtin.assert:
        that: ran and flag
        fail_msg: "flag is {{ flag }}"
      ignore_errors: true
      register: asserted
    - name: Included
      ansible.builtin.include_tasks: included.yml
    - name: Show what was registered
      ansible.builtin.debug:
        msg: "{{ {'plain': plain, 'magic': magic, 'ran': ran, 'broken': broken.msg, 'asserted': asserted.msg,
                  'included': included} }}"
"""
INCLUDED = """
- name: In the included file
  ansible.builtin.set_fact:
    included: "{{ ansible_user }} here"
"""
# Forked, whatever the switch: a loop, a module.
FORKED = ["A loop, judged per item by its worker", "A module runs in its worker"]

# ansible-playbook, with each worker it starts named on stderr at exit.
COUNTING = r"""
import atexit, json, runpy, sys
from ansible.executor.process import worker
forked = []
start = worker.WorkerProcess.start
def counted(self):
    forked.append(self._task.get_name())
    return start(self)
worker.WorkerProcess.start = counted
atexit.register(lambda: print("forked-for=" + json.dumps(forked), file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(tmp_path, switch: str, callback: str, *args: str) -> tuple[str, list[str]]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    (tmp_path / "included.yml").write_text(INCLUDED)
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": callback, "CRUDDUR_IN_PARENT": switch}
    proc = subprocess.run([sys.executable, "-c", COUNTING, str(VENV_BIN / "ansible-playbook"), str(playbook), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    forked = json.loads(proc.stderr.split("forked-for=")[1].splitlines()[0])
    return proc.stdout, forked


def without_times(value):
    """A json callback result without what differs between any two runs (times, task ids)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in ("duration", "id", "delta", "start", "end")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def test_tasks_a_worker_would_only_compute_are_settled_here_as_a_worker_reports_them(tmp_path):
    off, forked_off = run(tmp_path, "0", "json")
    on, forked_on = run(tmp_path, "1", "json")
    # Every result, registered value, hidden output, fact and count is the same...
    assert without_times(json.loads(on)) == without_times(json.loads(off))
    results = json.loads(on)["plays"][0]["tasks"]
    shown = results[-1]["hosts"]["localhost"]["msg"]
    assert shown["plain"] == {"changed": False, "false_condition": "flag | bool",
                              "skip_reason": "Conditional result was False", "skipped": True}
    assert shown["magic"]["false_condition"] == "ansible_user != 'deploy'"
    assert "'nowhere_defined' is undefined" in shown["broken"]
    assert shown["asserted"] == "flag is False"
    assert shown["included"] == "deploy here"
    assert results[2]["hosts"]["localhost"]["_ansible_no_log"] is True
    assert json.loads(on)["stats"]["localhost"] == {"changed": 0, "failures": 0, "ignored": 2, "ok": 7,
                                                    "rescued": 0, "skipped": 5, "unreachable": 0}
    # ...but only the loop and the module forked a worker.
    assert forked_on == FORKED
    assert len(forked_off) == len(results) and set(FORKED) < set(forked_off)


def test_the_default_output_is_the_same_and_says_so_at_vvv(tmp_path):
    off, _ = run(tmp_path, "0", "ansible.builtin.default")
    on, _ = run(tmp_path, "1", "ansible.builtin.default")
    assert on == off
    assert "skipping: [localhost]" in on
    verbose, _ = run(tmp_path, "1", "ansible.builtin.default", "-vvv")
    assert "'Skipped include' skipped in ansible-playbook's own process, no worker forked" in verbose
    assert "'Show what was registered' run in ansible-playbook's own process, no worker forked" in verbose


HOSTS = """
[pair]
one who=ada tolerant=true
two who=bob tolerant=false
[pair:vars]
ansible_connection=local
ansible_python_interpreter={{ ansible_playbook_python }}
"""
PAIR = """
- hosts: pair
  gather_facts: false
  tasks:
    - name: A block whose keywords each host templates its own way
      ignore_errors: "{{ tolerant }}"
      remote_user: "{{ who }}"
      block:
        - name: Said here, for each host
          ansible.builtin.debug:
            msg: "{{ who }} as {{ ansible_user }}"
        - name: Failed here, ignored where tolerated
          ansible.builtin.fail:
            msg: "{{ who }} failed"
"""


def test_each_host_gets_its_own_values_when_settled_here(tmp_path):
    (tmp_path / "hosts.ini").write_text(HOSTS)
    (tmp_path / "pair.yml").write_text(PAIR)
    runs = {}
    for switch in ("0", "1"):
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "json", "CRUDDUR_IN_PARENT": switch}
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "pair.yml")],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]  # two failed
        runs[switch] = without_times(json.loads(proc.stdout))
    assert runs["1"] == runs["0"]
    said, failed = (task["hosts"] for task in runs["1"]["plays"][0]["tasks"])
    assert said["one"]["msg"] == "ada as ada" and said["two"]["msg"] == "bob as bob"
    assert runs["1"]["stats"]["one"]["ignored"] == 1 and runs["1"]["stats"]["two"]["failures"] == 1
