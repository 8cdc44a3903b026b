"""Keep the plain data ansible-core parses from the same YAML files at every start-up.

Before it reads a playbook, every ansible-playbook (and ansible, ansible-lint, molecule: whatever
imports ansible-core) parses two large YAML files of ansible-core's own:
- ansible.builtin's routing table (config/ansible_builtin_runtime.yml, 370 kB), read through the
  collection loader's `_meta_yml_to_dict`, which ansible-core leaves open to another
  implementation for this very purpose ("to allow other implementations to cache the output");
- its configuration definitions (config/base.yml, 90 kB), read by ConfigManager.
That is about 50 ms of the 0.3 s an ansible-playbook spends before its first task, every run, for
the same result (libyaml parses both already). Both give plain data (dicts, lists, strings,
numbers), which is kept here with marshal, as Python keeps bytecode: in .cache/startup, one file
per content, keyed by the SHA-256 of the YAML text and the versions of Python and PyYAML. A
changed file is a new key; a value marshal cannot keep exactly is not kept.

It must be in place before ansible-core loads those files, so it is imported when the project's
venv starts Python (bin/bootstrap links it into the venv with a .pth file), and imports nothing
then: it waits for the two ansible-core modules to be imported and wraps their readers. Anything
unexpected (another layout of ansible-core, a directory others can write to, a damaged entry)
falls back to parsing. CRUDDUR_STARTUP_CACHE=0 turns it off; another value names the directory.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

SWITCH = "CRUDDUR_STARTUP_CACHE"
HERE = os.path.dirname(os.path.realpath(__file__))
DIRECTORY = os.path.join(os.path.dirname(HERE), ".cache", "startup")


def _sibling(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cruddur_{name}", os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Store:
    """private_cache.Store, loaded when first used: the .pth import at every start of the venv's
    Python stays a few imports of the standard library's that are loaded already."""

    def __init__(self, directory: str):
        self.path = directory
        self._store = None

    def value(self, kind: str, text: bytes, parse, *identity, codec=None):
        if self._store is None:
            try:
                self._store = _sibling("private_cache").Store(self.path)
            except Exception:  # noqa: BLE001 (no cache: parsed as before)
                return parse()
        return self._store.value(kind, text, parse, *identity, codec=codec)


def yaml_identity() -> tuple:
    import yaml

    return (yaml.__version__, bool(getattr(yaml, "__with_libyaml__", False)))


def wrap_collection_meta(module, store: Store) -> None:
    """ansible.utils.collection_loader._collection_finder: collections' meta/runtime.yml."""
    original = module._meta_yml_to_dict
    if original is None or getattr(original, "cruddur_cached", False):
        return

    def _meta_yml_to_dict(yaml_string_data, content_id):
        text = yaml_string_data.encode("utf-8", "surrogateescape") if isinstance(yaml_string_data, str) else bytes(yaml_string_data)
        return store.value("collection-meta", text, lambda: original(yaml_string_data, content_id), *yaml_identity())

    _meta_yml_to_dict.cruddur_cached = True
    module._meta_yml_to_dict = _meta_yml_to_dict


def wrap_config_definitions(module, store: Store) -> None:
    """ansible.config.manager: ConfigManager's definitions (base.yml)."""
    manager = module.ConfigManager
    original = manager._read_config_yaml_file
    if getattr(original, "cruddur_cached", False):
        return

    def _read_config_yaml_file(self, yml_file):
        try:
            with open(yml_file, "rb") as source:
                text = source.read()
        except (OSError, TypeError, ValueError):
            return original(self, yml_file)  # its own error for a missing file
        return store.value("config-definitions", text, lambda: original(self, yml_file), *yaml_identity())

    _read_config_yaml_file.cruddur_cached = True
    manager._read_config_yaml_file = _read_config_yaml_file


class _DocumentationYaml:
    """The yaml module as ansible.plugins.loader and ansible.utils.plugin_docs see it, whose load()
    of a plugin's documentation (or a documentation fragment) with Ansible's loader is kept: every
    start-up parsed the documentation of every connection, become and shell plugin (and their
    fragments) for their options, about 40 ms. The value carries Ansible's tags (the origin of each
    value, for its messages), so it is kept with pickle, keyed by the text and its origin."""

    def __init__(self, module, store: Store, loader):
        self._module, self._store, self._loader = module, store, loader

    def __getattr__(self, name):
        return getattr(self._module, name)

    def load(self, stream, Loader=None):  # noqa: N803 (yaml.load's own name)
        if Loader is not self._loader or not isinstance(stream, str):
            return self._module.load(stream, Loader=Loader)
        from ansible._internal._datatag._tags import Origin, SourceWasEncrypted, VaultedValue
        from ansible.module_utils.ansible_release import __version__ as ansible_version

        origin = Origin.get_tag(stream)
        if origin is None or VaultedValue.is_tagged_on(stream) or SourceWasEncrypted.is_tagged_on(stream):
            return self._module.load(stream, Loader=Loader)
        import pickle

        return self._store.value("plugin-documentation", stream.encode("utf-8", "surrogateescape"),
                                 lambda: self._module.load(stream, Loader=Loader),
                                 repr(origin), ansible_version, *yaml_identity(), codec=pickle)


def wrap_plugin_documentation(module, store: Store) -> None:
    """ansible.plugins.loader (plugins' documentation, for their options), ansible.utils.plugin_docs
    (their fragments)."""
    if isinstance(module.yaml, _DocumentationYaml):
        return
    module.yaml = _DocumentationYaml(module.yaml, store, module.AnsibleLoader)


WRAPPERS = {
    "ansible.utils.collection_loader._collection_finder": wrap_collection_meta,
    "ansible.config.manager": wrap_config_definitions,
    "ansible.plugins.loader": wrap_plugin_documentation,
    "ansible.utils.plugin_docs": wrap_plugin_documentation,
}


class _Wrapped:
    """The module's own loader, which then wraps the module's reader."""

    def __init__(self, loader, wrap, store: Store):
        self._loader, self._wrap, self._store = loader, wrap, store

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        try:
            self._wrap(module, self._store)
        except Exception:  # noqa: BLE001,S110 (another layout of ansible-core: parsed as it parses)
            pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


class Finder:
    """On sys.meta_path until both modules are imported: finds them as Python would, and hands
    their loader the wrapping to do."""

    def __init__(self, store: Store):
        self.store = store
        self.pending = dict(WRAPPERS)

    def find_spec(self, name, path=None, target=None):
        wrap = self.pending.pop(name, None)
        if wrap is None:
            return None
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Wrapped(spec.loader, wrap, self.store)
        return spec


def install(directory: str = DIRECTORY) -> Finder:
    """Wrap the readers once their modules are imported (now, if they already are)."""
    store = Store(directory)
    finder = Finder(store)
    for name, wrap in WRAPPERS.items():
        if name in sys.modules:
            finder.pending.pop(name)
            try:
                wrap(sys.modules[name], store)
            except Exception:  # noqa: BLE001,S110 (another layout of ansible-core)
                pass
    if finder.pending:
        sys.meta_path.insert(0, finder)
    return finder


if __name__ == "cruddur_startup_cache" and os.environ.get(SWITCH, "") != "0":  # the venv's .pth file
    install(os.environ.get(SWITCH) or DIRECTORY)
