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

Before each task, the parent also collects its cyclic garbage and freezes what is left
(gc.freeze(), the pattern Python's documentation gives for fork without exec): the workers' own
collections then never walk, and so never copy, the pages they share with the parent. db-setup
2.72 -> 2.52 s, measured back to back.

AWS modules also parse botocore's service descriptions each time they make a client: every module
makes a new boto3 session, and every botocore session a new data loader with an empty cache, so
each task read and decoded the service's JSON again (EC2's alone is about 0.1 s of CPU; a third of
the samples of a converged aws-site run, profiled). Here every botocore loader configured alike
(same search paths, same extras) shares one cache, as all the clients of one botocore session
already do, and the parent loads the descriptions of the services a module asks for (the names it
passes to client()) before its task: the workers inherit them, parsed. Converged aws-site 5.5 ->
4.7 s, back to back.

The filter and test plugins (Ansible's own, the project's) are loaded here too, before the first
task: a loader fills its cache the first time a template uses a filter or test, and the parent
never does before it forks, so every worker loaded them all again (about 7 ms of every task that
templates a filter; db-setup's 23 workers spent 764 ms, now 607 ms).

The task's module is compiled here too (from the syntax tree parsed for its imports), the
project's own module_utils it imports are imported, and its action plugin is loaded: the
collection loader keeps no bytecode, so each worker compiled its module again (1-4 ms), and
loaded its action plugin and the plugin's configuration. So are the lookup plugins that the
variables of a play's hosts (at the play's start) and a task's own arguments name by a literal
(lookup('ansible.builtin.env', ...)): each worker that templated such a variable loaded the
plugin again, its documentation parsed for its options (db-setup 1.08 -> 1.05 s).

Loaded at start-up, before any worker is forked, it also installs plugins/template_cache.py (the
code of compiled templates kept, in memory and in .cache/templates) and the in-process runner for the
actions that have their own plugin (plugins/in_process.py, install()): template and copy, command,
uri, service, fact gathering run their modules through ActionBase._execute_module, which the
action plugin links in plugins/action cannot reach.
"""

from __future__ import annotations

import ast
import gc
import importlib
import importlib.util
import os
import re
import sys
import types

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import action_loader, filter_loader, lookup_loader, module_loader, test_loader

DOCUMENTATION = """
name: cruddur_preload
type: aggregate
short_description: import a module's libraries once in the parent process, for the in-process runner
description:
  - Before a task starts, imports the collection module_utils and third-party libraries its module
    imports, so that the forked workers that run modules in process inherit them.
  - Also loads the filter and test plugins before the first task, the lookups the play's
    variables and the task's arguments name, the task's action plugin, and compiles its module,
    so the workers inherit them.
  - Installs plugins/template_cache.py (CRUDDUR_TEMPLATE_CACHE=0 leaves it out).
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


def imports_of(tree: ast.Module, module_name: str | None) -> list[str]:
    """The dotted names a module imports when it loads (relative ones resolved against its own
    dotted name; none for a module run as a file)."""
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
        elif name.startswith("ansible.module_utils."):  # the project's own among them
            wanted.append(name)
        elif top not in SKIP_TOP and top != "ansible_collections":
            wanted.append(top)
    return list(dict.fromkeys(wanted))


def _is_client_call(node) -> bool:
    func = getattr(node, "func", None)
    name = getattr(func, "attr", None) or getattr(func, "id", None)
    return isinstance(node, ast.Call) and name in ("client", "resource")


def _strings(node) -> set[str]:
    return {child.value for child in ast.walk(node)
            if isinstance(child, ast.Constant) and isinstance(child.value, str)}


def services_of(tree: ast.Module) -> set[str]:
    """The service names a module asks boto3 for: the string arguments of its client() and
    resource() calls (module.client("ec2"), boto3.client("rds")), and the strings a comprehension
    of such calls iterates over ([module.client(n) for n in ("rds", "ec2")])."""
    names = set()
    for node in ast.walk(tree):
        if _is_client_call(node) and node.args:
            names |= _strings(node.args[0])
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            if any(_is_client_call(child) for element in elements for child in ast.walk(element)):
                for generator in node.generators:
                    names |= _strings(generator.iter)
    return names


def analysis(source: bytes, path: str, module_name: str | None) -> tuple[list, list, types.CodeType]:
    """A module's imports, the boto3 services it asks for, and its code. Kept in .cache/modules
    (the preload's store, keyed by the source, as __pycache__ keeps bytecode): parsing and compiling
    took 1-3 ms a module, in every run (db-setup analysed eleven, about 15 ms)."""
    tree = ast.parse(source, path)
    return imports_of(tree, module_name), sorted(services_of(tree)), compile(tree, path, "exec", dont_inherit=True)


def analysed(store, source: bytes, path: str, module_name: str | None) -> tuple[list, list, types.CodeType]:
    """analysis(), read back from the store (private_cache.Store) when this source was analysed."""
    return store.value("module-analysis", source, lambda: analysis(source, path, module_name),
                       path, module_name, importlib.util.MAGIC_NUMBER)


# botocore's data loader caches what it parses per instance (Loader._cache, read by its
# instance_cache decorator). Loaders configured alike share one cache here.
_SHARED_CACHES: dict[tuple, dict] = {}
# What a service's clients and their paginators and waiters load, beside the service itself.
BOTOCORE_SERVICE_TYPES = ("service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2")
BOTOCORE_SHARED_DATA = ("endpoints", "partitions", "_retry", "sdk-default-configuration")


def share_botocore_data() -> None:
    """Make every botocore Loader created from now on share its cache with the loaders configured
    alike (type, file loader, search paths, extras). Idempotent."""
    from botocore import loaders

    if getattr(loaders.Loader.__init__, "cruddur_shared", False):
        return
    original = loaders.Loader.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        key = (type(self), type(self.file_loader), tuple(self.search_paths), tuple(self.extras_types))
        self._cache = _SHARED_CACHES.setdefault(key, {})

    __init__.cruddur_shared = True
    __init__.__wrapped__ = original
    loaders.Loader.__init__ = __init__


def load_botocore_services(services) -> list[str]:
    """Parse the descriptions of the services among `services` (any strings) that botocore knows,
    with a loader configured as a botocore session's (AWS_DATA_PATH); return the ones loaded."""
    from botocore import exceptions, loaders

    loader = loaders.create_loader(os.environ.get("AWS_DATA_PATH"))
    known = set(loader.list_available_services("service-2"))
    loaded = []
    for name in BOTOCORE_SHARED_DATA:
        try:
            loader.load_data(name)
        except exceptions.DataNotFoundError:
            continue
    for service in sorted(set(services) & known):
        version = loader.determine_latest_version(service, "service-2")
        for type_name in BOTOCORE_SERVICE_TYPES:
            # The cache is keyed by the arguments as passed: botocore's client asks for a model
            # with api_version=None, for its paginators and waiters with the version, and its
            # session's get_waiter_model with None as the third argument.
            for args, kwargs in (((service, type_name), {"api_version": None}),
                                 ((service, type_name, version), {}), ((service, type_name, None), {})):
                try:
                    loader.load_service_model(*args, **kwargs)
                except exceptions.DataNotFoundError:
                    break
        loaded.append(service)
    return loaded


def load_action_plugin(task) -> str:
    """The action plugin a task's worker will run, loaded (its module and its configuration)
    into the loader's caches, chosen as TaskExecutor chooses it (network platform actions aside):
    the module's own action, an action named as the task's, or `normal`."""
    found = module_loader.find_plugin_with_context(task.action, collection_list=task.collections)
    if found.resolved and found.action_plugin:
        name, collections = found.action_plugin, task.collections
    elif action_loader.has_plugin(task.action, collection_list=task.collections):
        name, collections = task.action, task.collections
    else:
        name, collections = "ansible.legacy.normal", None
    action_loader.get(name, class_only=True, collection_list=collections)
    return name


# A lookup named by a literal in a template: lookup('ansible.builtin.env', ...), query("file", ...).
LOOKUP_CALL = re.compile(r"""\b(?:lookup|query|q)\(\s*['"]([A-Za-z_][\w.]*)['"]""")


def lookups_named(value, found: set[str]) -> set[str]:
    """The lookup plugins the templates in `value` name (plain dicts, lists and strings, walked as
    they are: nothing is templated)."""
    if isinstance(value, str):
        if "(" in value:
            found.update(LOOKUP_CALL.findall(value))
    elif type(value) is dict:  # noqa: E721 (not HostVars or any other mapping that templates)
        for item in value.values():
            lookups_named(item, found)
    elif type(value) in (list, tuple):  # noqa: E721
        for item in value:
            lookups_named(item, found)
    return found


def load_jinja_plugins() -> None:
    """Load the filter and test plugins outside collections (ansible.builtin's, the project's
    filter_plugins, a role's) into their loaders' caches. A loader fills its cache when a template
    first uses a filter or test, once per process; the parent never templates with one before
    its workers fork, so each worker loaded them all again (about 10 ms, the first compile of a
    `when:` or an argument with a filter). A directory a role adds later clears the cache, and the
    next lookup fills it again. Cheap when filled."""
    filter_loader.get("ansible.builtin.default")
    test_loader.get("ansible.builtin.defined")


PLUGINS = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def load_plugin_module(name: str):
    """plugins/<name>.py, loaded from this file's place in the project."""
    spec = importlib.util.spec_from_file_location(f"cruddur_{name}", os.path.join(PLUGINS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_template_cache() -> None:
    """plugins/template_cache.py, unless CRUDDUR_TEMPLATE_CACHE=0; another value names its
    directory (default: the project's .cache/templates)."""
    cache = load_plugin_module("template_cache")
    setting = os.environ.get(cache.SWITCH, "")
    if setting != "0":
        cache.install(setting or os.path.join(os.path.dirname(PLUGINS), ".cache", "templates"))


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cruddur_preload"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._seen: set[str] = set()
        self._lookups: set[str] = set()
        self._in_process = load_plugin_module("in_process")
        self._in_process.install()
        self._modules = load_plugin_module("private_cache").Store(os.path.join(os.path.dirname(PLUGINS), ".cache", "modules"))
        try:
            install_template_cache()
        except Exception as exc:  # noqa: BLE001 (an ansible-core without what it relies on: compile as before)
            self._display.vvvv(f"cruddur_preload: templates compiled as Ansible does ({exc})")
        try:
            load_plugin_module("shipped_bytecode").install(
                load_plugin_module("private_cache").Store(os.path.join(os.path.dirname(PLUGINS), ".cache", "bytecode")))
        except Exception as exc:  # noqa: BLE001 (an ansible-core without what it relies on: sources only)
            self._display.vvvv(f"cruddur_preload: modules shipped as Ansible ships them ({exc})")
        # A task settled in this process (plugins/in_parent.py) needs nothing loaded for a
        # worker: what a worker inherits is loaded when one is about to be forked.
        self._before_fork = False
        try:
            self._before_fork = load_plugin_module("in_parent").install(before_fork=self.before_fork)
        except Exception as exc:  # noqa: BLE001 (an ansible-core without what it relies on: every task forks)
            self._display.vvvv(f"cruddur_preload: every task forks a worker ({exc})")

    def load_lookups(self, names: set[str], why: str) -> None:
        """Load the lookup plugins named (module and configuration) into the loader's cache, which
        the workers inherit: each worker that templated a variable with a lookup loaded the plugin
        again, its documentation parsed for its options (about 2 ms)."""
        for name in sorted(names - self._lookups):
            self._lookups.add(name)
            try:
                if lookup_loader.get(name) is not None:
                    self._display.vvvv(f"cruddur_preload: loaded lookup {name} for {why}")
            except Exception:  # noqa: BLE001,S112 (the template that uses it reports the error)
                continue

    def v2_playbook_on_play_start(self, play):
        """The lookups the variables of the play's hosts name (the inventory's, the play's)."""
        if os.environ.get(self._in_process.SWITCH, "1") == "0":
            return
        manager = play.get_variable_manager()
        inventory = getattr(manager, "_inventory", None)
        try:
            hosts = inventory.get_hosts(play.hosts) if inventory is not None else []
            names: set[str] = set()
            for host in hosts:
                lookups_named(manager.get_vars(play=play, host=host, include_hostvars=False), names)
        except Exception:  # noqa: BLE001 (a play Ansible itself will report on)
            return
        self.load_lookups(names, f"play {play.get_name()!r}")

    def v2_playbook_on_task_start(self, task, is_conditional):
        if os.environ.get(self._in_process.SWITCH, "1") == "0":
            return
        self.load_lookups(lookups_named([task.args, task.when, task.vars], set()), task.action)
        load_jinja_plugins()
        if not self._before_fork:
            self.before_fork(task)

    def before_fork(self, task) -> None:
        """Load what the task's worker, forked next, inherits (plugins/in_parent.py calls this
        just before the fork; without it, the task's start does)."""
        if os.environ.get(self._in_process.SWITCH, "1") == "0":
            return
        # What is alive now is kept out of the cycle collector's reach (after a collection of the
        # young generations, what is new since the last fork): the worker, forked next, then
        # neither scans nor copies it (a collection writes to every object it visits, and each
        # write copies a page the fork shared). A full collection here found no garbage the young
        # ones miss, and its first run walked everything start-up made (13 ms).
        gc.collect(1)
        gc.freeze()
        if task.action in self._seen:
            return
        self._seen.add(task.action)
        try:
            self._display.vvvv(f"cruddur_preload: loaded action {load_action_plugin(task)} for {task.action}")
        except Exception:  # noqa: BLE001,S110 (the worker reports what it cannot load)
            pass
        try:
            module = self._in_process.locate(module_loader, task.action, task.collections)
            if module:
                info = os.stat(module[0])
                with open(module[0], "rb") as handle:
                    source = handle.read()
                names, services, code = analysed(self._modules, source, *module)
                self._in_process.remember_code(module[0], info, code)  # once, for every worker
                self._display.vvvv(f"cruddur_preload: compiled {module[0]} for {task.action}")
        except Exception:  # noqa: BLE001 (an action without a module, a module that does not parse)
            return
        if not module:
            return
        self._in_process.add_module_utils_paths()
        for name in names:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001,S112 (the module reports its own missing library)
                continue
            self._display.vvvv(f"cruddur_preload: imported {name} for {task.action}")
        if "botocore" in sys.modules:
            try:
                share_botocore_data()
                services = load_botocore_services(services)
            except Exception:  # noqa: BLE001 (a botocore without this layout: the module loads its own)
                return
            if services:
                self._display.vvvv(f"cruddur_preload: botocore's {', '.join(services)} data loaded for {task.action}")
