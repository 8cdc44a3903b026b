"""The API role's pin comparison (plugins/filter/cruddur_api.py): pip runs only for unmet pins."""

from conftest import REPO, load_module

api = load_module(REPO / "plugins" / "filter" / "cruddur_api.py", "cruddur_api_filter")


def test_pins_are_met_by_the_installed_versions_under_any_spelling_of_the_name():
    installed = {"Flask": "3.1.3", "typing_extensions": "4.16.0", "psycopg-binary": "3.3.9"}
    assert api.cruddur_unmet_pins(["flask==3.1.3", "typing-extensions==4.16.0", "psycopg_binary==3.3.9"],
                                  installed) == []


def test_a_missing_package_another_version_an_unpinned_line_or_no_virtualenv_is_unmet():
    installed = {"Flask": "3.1.2"}
    assert api.cruddur_unmet_pins(["Flask==3.1.3", "gunicorn==27.0.1", "requests"], installed) == [
        "Flask==3.1.3", "gunicorn==27.0.1", "requests"]
    assert api.cruddur_unmet_pins(["Flask==3.1.3"], None) == ["Flask==3.1.3"]
