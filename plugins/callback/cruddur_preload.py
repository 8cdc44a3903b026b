"""Import a module's libraries once, in ansible-playbook's own process, before its task starts.

Ansible forks a worker for every task and host. A module run in that worker (plugins/in_process.py)
inherits whatever the parent process had imported, so what the parent imports once is free for
every later task. Without this, each AWS module task imported boto3 and amazon.aws's module_utils
again (about 0.35 s of CPU), and each PostgreSQL module task psycopg2, psycopg and
community.postgresql's module_utils (about 0.2 s).

When a task starts (this callback runs in the parent, before the task is queued to its workers),
the module's source is read for the imports it makes when it loads (not those deferred inside its
functions): the collection's module_utils (absolute or relative) and the third-party libraries are
imported here. A module that is shipped
anyway (another connection, become, another interpreter) gains nothing, and the parent has paid at
most one import per library. Failures are ignored: the module itself reports a missing library.
CRUDDUR_IN_PROCESS=0 turns this off with the in-process runner.

Loaded at start-up, before any worker is forked, it also installs the in-process runner for the
actions that have their own plugin (plugins/in_process.py, install()): template and copy, command,
uri, service, fact gathering run their modules through ActionBase._execute_module, which the
action plugin links in plugins/action cannot reach.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import module_loader

DOCUMENTATION = """
name: cruddur_preload
type: aggregate
short_description: import a module's libraries once in the parent process, for the in-process runner
description:
  - Before a task starts, imports the collection module_utils and third-party libraries its module
    imports, so that the forked workers that run modules in process inherit them.
  - Does nothing when CRUDDUR_IN_PROCESS=0.
"""

# Imports that are never worth doing here: the module's own package machinery and the standard library.
SKIP_TOP = {"__future__", "ansible"} | set(sys.stdlib_module_names)


def loaded_nodes(node):
    """Every node that runs when the module is imported: not the bodies of its functions, whose
    imports are deferred on purpose (a library only one branch needs)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from loaded_nodes(child)


def module_imports(path: str, module_name: str | None) -> list[str]:
    """The dotted names a module imports when it loads (relative ones resolved against its own
    dotted name; none for a module run as a file)."""
    with open(path, "rb") as source:
        tree = ast.parse(source.read(), path)
    names = []
    for node in loaded_nodes(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not module_name:
                    continue
                base = module_name.rsplit(".", node.level)[0]
                names.append(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.append(node.module)
    wanted = []
    for name in names:
        top = name.split(".", 1)[0]
        if name.startswith("ansible_collections.") and ".plugins.module_utils." in name:
            wanted.append(name)
        elif top not in SKIP_TOP and top != "ansible_collections":
            wanted.append(top)
    return list(dict.fromkeys(wanted))


def load_in_process():
    """plugins/in_process.py, loaded from this file's place in the project."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "in_process.py")
    spec = importlib.util.spec_from_file_location("cruddur_in_process", path)
    in_process = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(in_process)
    return in_process


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cruddur_preload"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._seen: set[str] = set()
        self._in_process = load_in_process()
        self._in_process.install()

    def v2_playbook_on_task_start(self, task, is_conditional):
        if os.environ.get(self._in_process.SWITCH, "1") == "0" or task.action in self._seen:
            return
        self._seen.add(task.action)
        try:
            module = self._in_process.locate(module_loader, task.action, task.collections)
            names = module_imports(*module) if module else []
        except Exception:  # noqa: BLE001 (an action without a module, a module that does not parse)
            return
        for name in names:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001,S112 (the module reports its own missing library)
                continue
            self._display.vvvv(f"cruddur_preload: imported {name} for {task.action}")
