"""Keep the Python code Jinja compiles for Ansible's templates, so that a template is compiled once,
not once in every worker of every run.

Ansible compiles a template (parse, generate Python source, compile it) each time it meets it, in
whatever process meets it, and keeps nothing: every forked worker compiled its task's templates
and the variables they use again. db-setup's 23 workers compiled 157 templates (74 different
ones), about 0.15 s of their 0.6 s. Python keeps its own bytecode in __pycache__; this does the
same for templates, as Jinja's own bytecode caches do for templates read through a loader:

- the code object of each compiled template or expression is kept in memory (the workers forked
  later inherit what their parent compiled) and in a directory, one file per template, so the
  next run loads it instead of compiling it;
- its key covers everything that shapes the generated code: the versions of Python, Jinja and
  ansible-core, the environment's settings (delimiters, whitespace, extensions, optimizer,
  finalize), escape_backslashes, and the source itself;
- the filters and tests a template names are looked up when it is compiled, and how they take
  their arguments (context, environment or neither) is written into the code: each entry records
  them, and is used only while the same names still resolve the same way;
- only what was read from a file that is not encrypted is kept: a template whose source carries
  no file origin (built at run time, given with -e on the command line), or comes from a vault,
  is compiled as before and never written anywhere;
- the directory is made private to its owner (0700) and is used only when it is: its files hold
  code, as __pycache__ does. Grown past some ten thousand entries (templates since changed or
  gone), it is emptied, and the next runs fill it again.

Anything unexpected (a template that fails to compile, a file that cannot be read or written, a
debugging mode of Ansible's) falls back to Ansible's own compilation. CRUDDUR_TEMPLATE_CACHE=0
turns it off; another value names the directory (default: .cache/templates in the project).
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import threading
import types

import jinja2
from jinja2 import nodes
from jinja2.environment import TemplateExpression
from jinja2.utils import _PassArg

from ansible.module_utils.ansible_release import __version__ as ANSIBLE_VERSION
from ansible._internal._datatag._tags import Origin, SourceWasEncrypted, VaultedValue
from ansible._internal._templating import _engine, _jinja_bits


def _sibling(name: str):
    """plugins/<name>.py (this file is loaded by path, not as part of a package)."""
    spec = importlib.util.spec_from_file_location(f"cruddur_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


private_cache = _sibling("private_cache")

SWITCH = "CRUDDUR_TEMPLATE_CACHE"
# The layout of an entry; a change makes every older entry a miss.
FORMAT = 1
VERSIONS = (FORMAT, sys.version, importlib.util.MAGIC_NUMBER, jinja2.__version__, ANSIBLE_VERSION)

_capture = threading.local()


def pass_kind(func) -> str:
    """How Jinja's generated code calls a filter or test: with the context, the eval context, the
    environment, nothing extra, or (missing) not at all."""
    if func is None:
        return "missing"
    kind = _PassArg.from_obj(func)
    return kind.name if kind else "plain"


def settings(env) -> tuple:
    """What of an environment shapes the code it generates."""
    return (
        type(env).__module__, type(env).__qualname__, env.code_generator_class.__qualname__,
        tuple(repr(getattr(env, name)) for name in _jinja_bits._TEMPLATE_OVERRIDE_FIELD_NAMES),
        env.optimized, env.is_async, repr(env.autoescape), tuple(sorted(env.extensions)),
        pass_kind(env.finalize) if env.finalize else None,
    )


def dependencies(env, tree: nodes.Template) -> tuple:
    """The filters and tests a template names, with how each is called now."""
    names = {("filter", node.name) for node in tree.find_all(nodes.Filter)}
    names |= {("test", node.name) for node in tree.find_all(nodes.Test)}
    return tuple((kind, name, how_called(env, kind, name)) for kind, name in sorted(names))


def resolve(env, kind: str, name: str):
    try:
        return (env.filters if kind == "filter" else env.tests).get(name)
    except Exception:  # noqa: BLE001 (a plugin that fails to load: Jinja sees no such filter)
        return None


# How each name was called, per kind, for one state of its plugin loader. Every template engine
# has an environment of its own whose plugin map starts empty, and a name the loader does not
# find (Jinja's own filters and tests: length, mapping, join...) is searched for again each time,
# about 0.3 ms each: every worker checking its cached templates' names paid that again. The
# loader replaces its cache of wrappers whenever its search paths change (a role with
# filter_plugins of its own), and what is known here is dropped with it.
_CALLED: dict[str, tuple[object, dict[str, str]]] = {}


def how_called(env, kind: str, name: str) -> str:
    plugins = env.filters if kind == "filter" else env.tests
    own = getattr(plugins, "_wrapped_funcs", {}).get(name)  # this environment's (or already looked up)
    if own is not None:
        return pass_kind(own)
    generation = getattr(getattr(plugins, "_plugin_loader", None), "_cached_non_collection_wrappers", None)
    if generation is None:
        return pass_kind(resolve(env, kind, name))
    known = _CALLED.get(kind)
    if known is None or known[0] is not generation:
        known = _CALLED[kind] = (generation, {})
    how = known[1].get(name)
    if how is None:
        how = known[1][name] = pass_kind(resolve(env, kind, name))
    return how


def kept(source) -> bool:
    """Only what was read from a file that is not encrypted."""
    origin = Origin.get_tag(source)
    return bool(origin and origin.path) and not (VaultedValue.is_tagged_on(source)
                                                 or SourceWasEncrypted.is_tagged_on(source))


class Store:
    """Code objects by key: in memory, then in the directory."""

    def __init__(self, directory: str | None):
        self.memory: dict[str, tuple[tuple, types.CodeType]] = {}
        self.directory = directory

    def get(self, key: str, env) -> types.CodeType | None:
        entry = self.memory.get(key)
        if entry is None and self.directory:
            try:
                entry = marshal.loads(private_cache.read(self.directory, key) or b"")
            except (EOFError, ValueError, TypeError):
                return None
        if not (isinstance(entry, tuple) and len(entry) == 2):
            return None  # none, or not an entry of this layout: compiled again
        deps, code = entry
        if any(how_called(env, kind, name) != how for kind, name, how in deps):
            return None  # a filter or test changed: compiled again, and the entry replaced
        self.memory[key] = entry
        return code

    def put(self, key: str, deps: tuple, code: types.CodeType) -> None:
        self.memory[key] = (deps, code)
        if not self.directory:
            return
        try:
            data = marshal.dumps((deps, code))
        except ValueError:
            return
        if not private_cache.write(self.directory, key, data):
            self.directory = None  # read-only, full, or gone: memory only from now on


def key_of(kind: str, env, source: str, escape_backslashes: bool) -> str:
    text = repr((VERSIONS, kind, settings(env), escape_backslashes, str(source)))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def compiled_alone(compile_it):
    """Run Ansible's own compilation and return its result with the code and tree of the template
    it compiled, or None for them when it compiled anything but exactly one."""
    previous = getattr(_capture, "frame", None)
    trees, codes = frame = _capture.frame = ([], [])  # a template compiled meanwhile has its own
    try:
        result = compile_it()
    finally:
        _capture.frame = previous
    if len(trees) != 1 or len(codes) != 1:
        return result, None, None
    return result, trees[0], codes[0]


def install(directory: str | None) -> Store:
    """Put the cache in front of TemplateEngine's compilation of templates and expressions."""
    engine = _engine.TemplateEngine
    if getattr(engine._compile_template, "cruddur_cached", None):
        return engine._compile_template.cruddur_cached
    store = Store(private_cache.private_directory(directory) if directory else None)
    env_class = _jinja_bits.AnsibleEnvironment
    original_template, original_expression = engine._compile_template, engine._compile_expression
    original_generate, original_compile = env_class._generate, env_class._compile

    def _generate(self, source, *args, **kwargs):
        if (frame := getattr(_capture, "frame", None)) is not None:
            frame[0].append(source)
        return original_generate(self, source, *args, **kwargs)

    def _compile(self, source, filename):
        code = original_compile(self, source, filename)
        if (frame := getattr(_capture, "frame", None)) is not None:
            frame[1].append(code)
        return code

    def usable(source) -> bool:
        return isinstance(source, str) and not env_class._debuggable_template_source and kept(source)

    def _compile_template(self, template, options):
        if not usable(template):
            return original_template(self, template, options)
        try:
            stripped, env = self._create_overlay(template, options.overrides)
        except Exception:  # noqa: BLE001 (Ansible's own path reports it)
            return original_template(self, template, options)
        key = key_of("template", env, stripped, options.escape_backslashes)
        code = store.get(key, env)
        if code is not None:
            return env.template_class.from_code(env, code, env.make_globals(None), None)
        result, tree, code = compiled_alone(lambda: original_template(self, template, options))
        if code is not None:
            store.put(key, dependencies(env, tree), code)
        return result

    def _compile_expression(self, expression, options):
        if not usable(expression):
            return original_expression(self, expression, options)
        env = self.environment
        key = key_of("expression", env, expression, options.escape_backslashes)
        code = store.get(key, env)
        if code is not None:
            template = env.template_class.from_code(env, code, env.make_globals(None), None)
            return _jinja_bits.AnsibleTemplateExpression(TemplateExpression(template, False))
        result, tree, code = compiled_alone(lambda: original_expression(self, expression, options))
        if code is not None:
            store.put(key, dependencies(env, tree), code)
        return result

    _compile_template.cruddur_cached = store
    env_class._generate, env_class._compile = _generate, _compile
    engine._compile_template, engine._compile_expression = _compile_template, _compile_expression
    return store
