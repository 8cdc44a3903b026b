"""Run a module inside Ansible's worker process when the module would run on this machine,
with this Python, anyway.

Each module task normally costs about 0.3-0.5 s of CPU here (docs/benchmarks.md): a fresh
interpreter, the AnsiballZ zip, and above all compiling the module_utils it carries (zipimport
keeps no bytecode). Most of the project's module tasks run on hosts with
`ansible_connection: local` and `ansible_python_interpreter: "{{ ansible_playbook_python }}"`
(the database chores, the AWS plays): the worker process Ansible has already forked for the task
is such an interpreter, with `ansible.module_utils` already imported. There the module runs in
that worker, as AnsiballZ would run it (as __main__; a collection's module by its package name):
same arguments (encoded and decoded the way Ansible ships them), same AnsibleModule (argument
checks, check mode, no_log masking), and the result goes through the same parser as a shipped
module's. Each worker is a fork that serves one task and exits, so nothing a module changes in
its process outlives it.

This is the action of each of the project's modules (plugins/action/cruddur_*.py) and of every
module without an action of its own (plugins/action/normal.py, which Ansible looks up in the
configured action_plugins before its own).

Anything else is shipped as usual: another connection, become, async, another interpreter (a
delegated task is judged by its delegate's), or CRUDDUR_IN_PROCESS=0 in the environment. A
task's `environment:` is applied to the worker's own environment, as a shipped module gets it.
At -vvv each task says which way it ran and, when shipped, why.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shutil
import sys
import tempfile

from ansible import constants as C
from ansible.module_utils._internal._ansiballz import _loader
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash
from ansible.vars.clean import remove_internal_keys

display = Display()

SWITCH = "CRUDDUR_IN_PROCESS"
# The serialization profile of modules that declare no METADATA (those that do are shipped).
PROFILE = "legacy"


class InProcessAction(ActionBase):
    """A module's action: in the worker when that is where it would run, else shipped."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        module, why_shipped = None, self._why_shipped(task_vars)
        if not why_shipped:
            module, why_shipped = self._resolve()
        if why_shipped:
            display.vvv(f"{self._task.action}: shipped to the host ({why_shipped})", host=self._host_name())
            wrap_async = self._task.async_val and not self._connection.has_native_async
            result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        else:
            display.vvv(f"{self._task.action}: run in the worker process", host=self._host_name())
            result = merge_hash(result, self._run_here(task_vars, *module))
        if self._task.action in C._ACTION_SETUP:
            result["_ansible_verbose_override"] = True  # as the normal action does for setup
        return result

    def _host_name(self) -> str:
        return self._play_context.remote_addr or "localhost"

    def _resolve(self) -> tuple[tuple[str, str | None] | None, str]:
        """The module's file and the package name AnsiballZ would run it by (None for a file from
        a library directory), or None and why it cannot run here."""
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(
            self._task.action, mod_type=".py", collection_list=self._task.collections)
        path = found.plugin_resolved_path if found.resolved else None
        if not path or not path.endswith(".py"):
            return None, "not a Python module found on this machine"
        with open(path, "rb") as source:
            if re.search(rb"^METADATA\s*=", source.read(), re.M):
                # It may ask for a serialization profile of its own; this path speaks "legacy".
                return None, "it declares its own METADATA"
        collection = found.plugin_resolved_collection
        leaf = found.plugin_resolved_name.rsplit(".", 1)[-1]
        # A collection's module by its package (its relative and ansible_collections imports
        # resolve through the controller's collection loader), ansible-core's own as
        # ansible.modules.<name>, one from a library directory as a file.
        if collection == "ansible.builtin":
            return (path, f"ansible.modules.{leaf}"), ""
        if collection:
            return (path, f"ansible_collections.{collection}.plugins.modules.{leaf}"), ""
        return (path, None), ""

    def _why_shipped(self, task_vars: dict) -> str:
        """'' when the task may run in this process, else the reason it may not."""
        if os.environ.get(SWITCH, "1") == "0":
            return f"{SWITCH}=0"
        if getattr(self._connection, "transport", None) != "local":
            return f"the connection is {getattr(self._connection, 'transport', '?')}, not local"
        if self._play_context.become:
            return "become"
        if self._task.async_val:
            return "async"
        # A delegated task runs with the delegate's variables (its connection is already the delegate's).
        host_vars = (task_vars.get("ansible_delegated_vars", {}).get(self._task.delegate_to, {})
                     if self._task.delegate_to else task_vars)
        interpreter = host_vars.get("ansible_python_interpreter")
        if interpreter is not None:
            interpreter = self._templar.template(interpreter)
        if not interpreter or not same_python(interpreter, sys.executable):
            return f"its interpreter is {interpreter or 'discovered'}, not {sys.executable}"
        return ""

    def _run_here(self, task_vars: dict, path: str, package_name: str | None) -> dict:
        from ansible.module_utils import basic
        import ansible.module_utils as module_utils_package

        name = self._task.action
        # The project's module_utils directories, as `import ansible.module_utils.<name>` finds
        # them inside a shipped module.
        for directory in C.config.get_config_value("DEFAULT_MODULE_UTILS_PATH") or []:
            if directory not in module_utils_package.__path__:
                module_utils_package.__path__.append(directory)

        # The task's `environment:`, as a shipped module gets it (this process serves only this task).
        environment = {}
        self._compute_environment_string(environment)
        os.environ.update({key: str(value) for key, value in environment.items()})

        args = dict(self._task.args)
        self._update_module_args(name, args, task_vars)
        # A temporary directory for the module, removed after it as Ansible removes a shipped
        # module's (a module left to make its own relies on an exit handler this worker skips).
        scratch = tempfile.mkdtemp(prefix="ansible-in-process-")
        args["_ansible_tmpdir"] = scratch
        encoder = get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}, cls=encoder).encode()
        basic._ANSIBLE_PROFILE = PROFILE

        stdout, stderr, rc = io.StringIO(), io.StringIO(), 0
        # A module may chdir; the next loop item starts where this one did, as a shipped one would.
        cwd = os.getcwd()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    # As AnsiballZ runs it: as __main__, which must print its result and exit.
                    if package_name:
                        runpy.run_module(package_name, run_name="__main__", alter_sys=False)
                    else:
                        with open(path, "rb") as source:
                            code = compile(source.read(), path, "exec")
                        exec(code, {"__name__": "__main__", "__file__": path})  # noqa: S102 (the module itself)
                    raise RuntimeError("New-style module did not handle its own exit.")
                except Exception as exc:  # not SystemExit: modules exit with it
                    # A crash is reported as AnsiballZ reports one (it prints the result, exits 1).
                    _loader._handle_exception(exc, PROFILE)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            basic._ANSIBLE_ARGS = basic._ANSIBLE_PROFILE = None
            os.chdir(cwd)
            shutil.rmtree(scratch, ignore_errors=True)
        data = self._parse_returned_data({"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()},
                                         PROFILE)
        remove_internal_keys(data)
        return data


def same_python(one: str, other: str) -> bool:
    """The same interpreter with the same packages: one file, reached from the same directory
    (a venv's bin/python and bin/python3 are; the venv's and its base interpreter are not)."""
    one, other = os.path.abspath(one), os.path.abspath(other)
    return os.path.dirname(one) == os.path.dirname(other) and os.path.realpath(one) == os.path.realpath(other)


# plugins/action/<module>.py and normal.py are links to this file.
ActionModule = InProcessAction
