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

import builtins
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tempfile
import types

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


def shipped(action: ActionBase, **kwargs) -> dict:
    """Ansible's own _execute_module: the module is sent to the host and run there."""
    return getattr(ActionBase, "_cruddur_shipped_execute_module", ActionBase._execute_module)(action, **kwargs)


class InProcessAction(ActionBase):
    """A module's action: in the worker when that is where it would run, else shipped."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result = merge_hash(result, execute_module(self, task_vars=task_vars or {}, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if self._task.action in C._ACTION_SETUP:
            result["_ansible_verbose_override"] = True  # as the normal action does for setup
        return result


def execute_module(self, module_name=None, module_args=None, tmp=None, task_vars=None, persist_files=False,
                   delete_remote_tmp=None, wrap_async=False, ignore_unknown_opts=False):
    """ActionBase._execute_module, run here when the module would run on this machine with this
    Python anyway, else shipped exactly as Ansible ships it. The action above calls it; install()
    puts it in place of Ansible's for the actions that have their own plugin (template and copy,
    command, uri, service, gather_facts...)."""
    name = module_name or self._task.action
    label = name if name == self._task.action else f"{name} (for {self._task.action})"
    task_vars = task_vars if task_vars is not None else {}
    if tmp is not None or delete_remote_tmp is not None or persist_files:
        why = "a caller that manages the temporary directory itself"
    elif wrap_async or self._task.async_val:
        why = "async"
    else:
        why = why_not_here(self, task_vars)
    module = None
    if not why:
        module, why = resolve(self, name)
    if why:
        display.vvv(f"{label}: shipped to the host ({why})", host=host_name(self))
        return shipped(self, module_name=module_name, module_args=module_args, tmp=tmp, task_vars=task_vars,
                       persist_files=persist_files, delete_remote_tmp=delete_remote_tmp, wrap_async=wrap_async,
                       ignore_unknown_opts=ignore_unknown_opts)
    display.vvv(f"{label}: run in the worker process", host=host_name(self))
    return run_here(self, task_vars, name, self._task.args if module_args is None else module_args, *module,
                    ignore_unknown_opts=ignore_unknown_opts)


def install() -> None:
    """Route every action's module runs through execute_module (once, in the parent process, so
    that every forked worker has it). CRUDDUR_IN_PROCESS=0 leaves Ansible's own in place."""
    if os.environ.get(SWITCH, "1") == "0" or hasattr(ActionBase, "_cruddur_shipped_execute_module"):
        return
    ActionBase._cruddur_shipped_execute_module = ActionBase._execute_module
    ActionBase._execute_module = execute_module


def host_name(action: ActionBase) -> str:
    return action._play_context.remote_addr or "localhost"


def locate(module_loader, name: str, collections) -> tuple[str, str | None] | None:
    """A Python module's file and the name AnsiballZ would run it by: a collection's module by its
    package (its relative and ansible_collections imports resolve through the controller's
    collection loader), ansible-core's own as ansible.modules.<name>, one from a library
    directory as a file (None). None when there is no such Python module here."""
    found = module_loader.find_plugin_with_context(name, mod_type=".py", collection_list=collections)
    path = found.plugin_resolved_path if found.resolved else None
    if not path or not path.endswith(".py"):
        return None
    collection = found.plugin_resolved_collection
    leaf = found.plugin_resolved_name.rsplit(".", 1)[-1]
    if collection == "ansible.builtin":
        return path, f"ansible.modules.{leaf}"
    if collection:
        return path, f"ansible_collections.{collection}.plugins.modules.{leaf}"
    return path, None


def resolve(action: ActionBase, name: str) -> tuple[tuple[str, str | None] | None, str]:
    """locate(), or None and why the module cannot run here."""
    module = locate(action._shared_loader_obj.module_loader, name, action._task.collections)
    if module is None:
        return None, "not a Python module found on this machine"
    with open(module[0], "rb") as source:
        text = source.read()
    if re.search(rb"^METADATA\s*=", text, re.M):
        # It may ask for a serialization profile of its own; this path speaks "legacy".
        return None, "it declares its own METADATA"
    if b"respawn_module(" in text:
        # apt and the like re-run themselves under the interpreter that has their library,
        # from the module file AnsiballZ unpacked: only a shipped module can.
        return None, "it may respawn under another interpreter"
    return module, ""


def why_not_here(action: ActionBase, task_vars: dict) -> str:
    """'' when the task's module may run in this process, else the reason it may not."""
    if os.environ.get(SWITCH, "1") == "0":
        return f"{SWITCH}=0"
    transport = getattr(action._connection, "transport", "?")
    if transport != "local":
        return f"the connection is {transport}, not local"
    if action._play_context.become:
        return "become"
    if action._task.async_val:
        return "async"
    # A delegated task runs with the delegate's variables (its connection is already the delegate's).
    host_vars = (task_vars.get("ansible_delegated_vars", {}).get(action._task.delegate_to, {})
                 if action._task.delegate_to else task_vars)
    interpreter = host_vars.get("ansible_python_interpreter")
    if interpreter is not None:
        interpreter = action._templar.template(interpreter)
    if not interpreter or not same_python(interpreter, sys.executable):
        return f"its interpreter is {interpreter or 'discovered'}, not {sys.executable}"
    return ""


def add_module_utils_paths() -> None:
    """The project's module_utils directories, as `import ansible.module_utils.<name>` finds them
    inside a shipped module (after ansible-core's own)."""
    import ansible.module_utils as module_utils_package

    for directory in C.config.get_config_value("DEFAULT_MODULE_UTILS_PATH") or []:
        if directory not in module_utils_package.__path__:
            module_utils_package.__path__.append(directory)


def run_here(action: ActionBase, task_vars: dict, name: str, task_args: dict, path: str, package_name: str | None,
             ignore_unknown_opts: bool = False) -> dict:
    from ansible.module_utils import basic

    add_module_utils_paths()

    # The task's `environment:`, as a shipped module gets it (this process serves only this task).
    environment = {}
    action._compute_environment_string(environment)
    os.environ.update({key: str(value) for key, value in environment.items()})

    args = dict(task_args)
    action._update_module_args(name, args, task_vars, ignore_unknown_opts=ignore_unknown_opts)
    # A temporary directory for the module: the action's own when it made one (copy puts the
    # file there), else one removed after the module, as Ansible removes a shipped module's (a
    # module left to make its own relies on an exit handler this worker skips).
    scratch = None
    if action._connection._shell.tmpdir:
        args["_ansible_tmpdir"] = action._connection._shell.tmpdir
    else:
        scratch = args["_ansible_tmpdir"] = tempfile.mkdtemp(prefix="ansible-in-process-")
    encoder = get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}, cls=encoder).encode()
    basic._ANSIBLE_PROFILE = PROFILE

    stdout, stderr, rc = io.StringIO(), io.StringIO(), 0
    # A shipped module on a local connection runs in the task's base directory (Ansible sets the
    # connection's cwd to it), so relative paths resolve the same here; and a module may chdir,
    # so the worker goes back to where it was afterwards (the next loop item starts afresh).
    cwd = os.getcwd()
    os.chdir(action._loader.get_basedir())
    # A shipped module's standard input is a pipe of its own that ends after the module's code;
    # the commands it starts inherit that, not the worker's (which may be a terminal, or a file
    # another process made non-blocking: ansible-playbook run by a command task refuses that).
    stdin = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                # As AnsiballZ runs it: as __main__, which must print its result and exit.
                exec(module_code(path), main_globals(path, package_name))  # noqa: S102 (the module itself)
                raise RuntimeError("New-style module did not handle its own exit.")
            except Exception as exc:  # not SystemExit: modules exit with it
                # A crash is reported as AnsiballZ reports one (it prints the result, exits 1).
                _loader._handle_exception(exc, PROFILE)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        basic._ANSIBLE_ARGS = basic._ANSIBLE_PROFILE = None
        os.dup2(stdin, 0)
        os.close(stdin)
        os.chdir(cwd)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    data = action._parse_returned_data({"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()},
                                       PROFILE)
    if data.pop("_ansible_suppress_tmpdir_delete", False):
        action._cleanup_remote_tmp = False
    remove_internal_keys(data)
    # As Ansible's _execute_module leaves them for every caller.
    for stream in ("stdout", "stderr"):
        if stream in data and f"{stream}_lines" not in data:
            data[f"{stream}_lines"] = (data.get(stream) or "").splitlines()
    return data


# Modules' code by file, compiled once per process: cruddur_preload compiles a task's module in
# ansible-playbook's own process before the task's workers fork, and they inherit it. (Ansible's
# collection loader keeps no bytecode, and a module run as a file has none either: each worker
# compiled its module again, 1-4 ms.)
# Every copy of this file (each action plugin link is a module of its own) shares one dict, kept
# on ActionBase as the original _execute_module is.
_CODE: dict[tuple[str, int, int], types.CodeType] = vars(ActionBase).get("_cruddur_module_code", {})
ActionBase._cruddur_module_code = _CODE


def remember_code(path: str, info: os.stat_result, code: types.CodeType) -> None:
    """The code of the module at `path` as it was when stat'ed (`info`), compiled by the caller."""
    _CODE[(path, info.st_mtime_ns, info.st_size)] = code


def module_code(path: str) -> types.CodeType:
    """The code of the module at `path`, compiled the first time this process asks (unless the
    preload compiled it before the fork: remember_code)."""
    info = os.stat(path)
    key = (path, info.st_mtime_ns, info.st_size)
    code = _CODE.get(key)
    if code is None:
        with open(path, "rb") as source:
            code = _CODE[key] = compile(source.read(), path, "exec", dont_inherit=True)
    return code


def main_globals(path: str, package_name: str | None) -> dict:
    """The globals a module runs with as __main__: as runpy.run_module gives them to a package's
    module (its spec, so that relative imports resolve), or as a script gets them."""
    if not package_name:
        return {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    spec = importlib.util.find_spec(package_name)
    return {"__name__": "__main__", "__file__": path, "__cached__": None, "__doc__": None,
            "__loader__": spec.loader, "__package__": spec.parent, "__spec__": spec, "__builtins__": builtins}


def same_python(one: str, other: str) -> bool:
    """The same interpreter with the same packages: one file, reached from the same directory
    (a venv's bin/python and bin/python3 are; the venv's and its base interpreter are not)."""
    one, other = os.path.abspath(one), os.path.abspath(other)
    return os.path.dirname(one) == os.path.dirname(other) and os.path.realpath(one) == os.path.realpath(other)


# plugins/action/<module>.py and normal.py are links to this file.
ActionModule = InProcessAction
