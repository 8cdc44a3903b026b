"""plugins/template_cache.py: the code Jinja compiles for a template is kept, in memory and in a
private directory, and used again only while everything that shaped it is the same."""

import json
import os
import subprocess
import sys

from conftest import REPO, run_playbook

# Run in a process of its own: installing the cache changes ansible-core's TemplateEngine there.
SCRIPT = r'''
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("template_cache", sys.argv[1])
cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache)
directory = sys.argv[2]
store = cache.install(directory)
assert cache.install(directory) is store  # once: a second install changes nothing

from ansible._internal._datatag._tags import Origin, TrustedAsTemplate, VaultedValue
from ansible._internal._templating import _jinja_bits
from ansible._internal._templating._engine import TemplateEngine
from jinja2.utils import pass_context

compiled = []
original = _jinja_bits.AnsibleEnvironment._compile
def counted(self, source, filename):
    compiled.append(1)
    return original(self, source, filename)
_jinja_bits.AnsibleEnvironment._compile = counted

def from_file(text):
    """A template as Ansible reads one from a playbook or a vars file."""
    return TrustedAsTemplate().tag(Origin(path="/project/roles/r/vars/main.yml", line_num=3).tag(text))

def files():
    return sorted(os.listdir(directory))

seen = {}
engine = TemplateEngine(variables={"name": "ada", "n": 3})
seen["first"] = (engine.template(from_file("{{ name | upper }}")), len(compiled), len(files()))
# A new process would start with an empty memory: the entry is read from its file.
store.memory.clear()
seen["again"] = (TemplateEngine(variables={"name": "bob", "n": 3}).template(from_file("{{ name | upper }}")),
                 len(compiled))
seen["expression"] = (engine.evaluate_conditional(from_file("n > 2")), len(compiled), len(files()))
store.memory.clear()
seen["expression_again"] = (engine.evaluate_conditional(from_file("n > 2")),
                            engine.evaluate_conditional(from_file("n > 2 and n < 3")), len(compiled))
# Not read from a file (built at run time, or given on the command line): compiled, never written.
before = files()
seen["no_origin"] = (engine.template(TrustedAsTemplate().tag("{{ name ~ '-x' }}")), files() == before)
vaulted = VaultedValue(ciphertext="$ANSIBLE_VAULT;1.1;AES256\n00").tag(from_file("{{ name ~ '-s3cret' }}"))
seen["vaulted"] = (engine.template(vaulted), files() == before)
# A filter that changes how it takes its arguments: the kept code calls it the old way, so it
# is compiled again (and the entry replaced).
@pass_context
def upper(context, value):
    return value.upper() + "!"
count = len(compiled)
store.memory.clear()
environment = TemplateEngine(variables={"name": "cy"})
environment.environment.filters["upper"] = upper
seen["changed_filter"] = (environment.template(from_file("{{ name | upper }}")), len(compiled) - count)
# A filter directory added later (a role's filter_plugins) brings a filter by a name known before
# (Jinja's own length) that takes its arguments otherwise: what was known of the name is dropped.
import tempfile, textwrap
from ansible.plugins.loader import filter_loader
count = len(compiled)
length_before = TemplateEngine(variables={"xs": [1, 2]}).template(from_file("{{ xs | length }}"))
store.memory.clear()  # read back in a new environment: how length is called is looked up, and kept
length_before = (length_before, TemplateEngine(variables={"xs": [1, 2, 3]}).template(from_file("{{ xs | length }}")))
plugins = tempfile.mkdtemp()
with open(os.path.join(plugins, "counting.py"), "w") as plugin:
    plugin.write(textwrap.dedent("""
        from jinja2.utils import pass_context
        @pass_context
        def length(context, value):
            return f"{len(value)} items"
        class FilterModule:
            def filters(self):
                return {"length": length}
    """))
filter_loader.add_directory(plugins)
store.memory.clear()
seen["filter_directory_added"] = (length_before,
                                  TemplateEngine(variables={"xs": [1, 2]}).template(from_file("{{ xs | length }}")),
                                  len(compiled) - count)
print(json.dumps(seen))
'''


def run_script(directory) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO / "plugins" / "template_cache.py"), str(directory)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_template_is_compiled_once_and_its_code_read_back(tmp_path):
    seen = run_script(tmp_path / "templates")
    assert seen["first"] == ["ADA", 1, 1]
    assert seen["again"] == ["BOB", 1]  # rendered with the new variables, nothing compiled
    assert seen["expression"] == [True, 2, 2]
    assert seen["expression_again"] == [True, False, 3]  # only the new expression was compiled
    assert os.stat(tmp_path / "templates").st_mode & 0o777 == 0o700


def test_only_what_was_read_from_a_plain_file_is_written(tmp_path):
    seen = run_script(tmp_path / "templates")
    assert seen["no_origin"] == ["ada-x", True]
    assert seen["vaulted"] == ["ada-s3cret", True]
    for entry in (tmp_path / "templates").iterdir():
        assert b"s3cret" not in entry.read_bytes()


def test_a_filter_that_now_takes_its_arguments_otherwise_gets_the_template_compiled_again(tmp_path):
    seen = run_script(tmp_path / "templates")
    assert seen["changed_filter"] == ["CY!", 1]


def test_a_filter_directory_added_later_drops_what_was_known_of_its_names(tmp_path):
    seen = run_script(tmp_path / "templates")
    assert seen["filter_directory_added"] == [[2, 3], "2 items", 2]


def test_a_directory_others_may_write_to_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    seen = run_script(shared)
    # Everything still renders, from memory; nothing is written where others could change it.
    assert seen["first"][0] == "ADA" and seen["again"][0] == "BOB"
    assert list(shared.iterdir()) == []


PLAYBOOK = '''
- hosts: localhost
  gather_facts: false
  vars:
    greeting: "{{ 'hello' | upper }}"
  tasks:
    - name: Render a variable and a conditional
      ansible.builtin.debug:
        msg: "said {{ greeting }} to {{ who }}"
      when: greeting | length > 2
'''


def test_a_second_run_renders_the_same_from_the_kept_code_and_writes_nothing_new(tmp_path):
    playbook = tmp_path / "greet.yml"
    playbook.write_text(PLAYBOOK)
    directory = tmp_path / "templates"
    runs = []
    for _ in range(2):
        run = run_playbook(str(playbook), "-e", "who=ada", env={"CRUDDUR_TEMPLATE_CACHE": str(directory)})
        assert run.rc == 0, run.output[-3000:]
        runs.append((run.output, sorted(p.name for p in directory.iterdir())))
    assert "msg: said HELLO to ada" in runs[0][0] and "msg: said HELLO to ada" in runs[1][0]
    assert runs[0][1] and runs[1][1] == runs[0][1]


def test_a_directory_grown_too_large_is_emptied_and_used_again(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("template_cache_prune", REPO / "plugins" / "template_cache.py")
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    directory = tmp_path / "templates"
    directory.mkdir(mode=0o700)
    for number in range(400):
        (directory / f"{number:064d}").write_bytes(b"old entry")
    grown = os.stat(directory).st_size
    cache.private_cache.PRUNE_AT = grown - 1  # this one has grown past the limit
    assert cache.private_cache.private_directory(str(directory)) == str(directory)
    assert list(directory.iterdir()) == [] and os.stat(directory).st_size < grown
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert [p.name for p in tmp_path.iterdir()] == ["templates"]  # nothing left beside it
    cache.private_cache.PRUNE_AT = 1 << 20
    (directory / "kept").write_bytes(b"entry")
    assert cache.private_cache.private_directory(str(directory)) == str(directory)
    assert [p.name for p in directory.iterdir()] == ["kept"]


def test_a_damaged_entry_is_a_miss_not_an_error(tmp_path):
    import importlib.util
    import marshal

    spec = importlib.util.spec_from_file_location("template_cache_damaged", REPO / "plugins" / "template_cache.py")
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    store = cache.Store(str(tmp_path))
    (tmp_path / "cut").write_bytes(marshal.dumps(((), compile("1", "<t>", "eval")))[:-3])
    (tmp_path / "other").write_bytes(marshal.dumps(["not", "an", "entry"]))
    assert store.get("cut", None) is None and store.get("other", None) is None
    assert store.get("absent", None) is None
    code = compile("1 + 1", "<t>", "eval")
    store.put("kept", (), code)
    store.memory.clear()
    assert eval(store.get("kept", None)) == 2  # noqa: S307 (the code this test compiled)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new-")] == []
