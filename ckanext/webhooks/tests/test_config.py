"""The options: one source (config_declaration.yaml), the README's table
checked against it, and bad values refused when CKAN starts."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import yaml

import ckan.plugins.toolkit as tk
from ckan.exceptions import CkanConfigurationException

from ckanext.webhooks.plugin import check_config

ROOT = pathlib.Path(__file__).resolve().parents[3]
# the plugin declares its options when it is loaded
pytestmark = pytest.mark.usefixtures("with_plugins")

DECLARATION = ROOT / "ckanext" / "webhooks" / "config_declaration.yaml"


def _declared() -> dict[str, dict]:
    [group] = yaml.safe_load(DECLARATION.read_text())["groups"]
    return {option["key"]: option for option in group["options"]}


def _readme_table() -> dict[str, str]:
    """Option -> default, from the README's table of options."""
    lines = (ROOT / "README.rst").read_text().splitlines()
    start = lines.index("Configuration")
    border = next(i for i in range(start, len(lines))
                  if lines[i].startswith("====") and " " in lines[i])
    widths = [len(column) for column in lines[border].split(" ")]
    cuts = [sum(widths[:i]) + i for i in range(len(widths))]
    rows: dict[str, list[str]] = {}
    option = None
    for line in lines[border + 3:]:
        if line.startswith("===="):
            break
        name = line[:cuts[1]].strip()
        default = line[cuts[1]:cuts[2]].strip()
        if name:
            option = name.strip("`")
            rows[option] = []
        if default:
            rows[option].append(default)
    return {name: " ".join(parts).strip("`") for name, parts in rows.items()}


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_the_readme_lists_every_option_with_its_declared_default():
    declared = _declared()
    table = _readme_table()
    assert list(table) == list(declared)
    for key, option in declared.items():
        assert table[key] == _as_text(option.get("default", "")), key


def test_every_option_has_a_description_an_example_and_numbers_a_validator():
    for key, option in _declared().items():
        assert option.get("description", "").strip(), key
        assert "example" in option, key
        if option.get("type") == "int":
            assert option.get("validators"), key


@pytest.mark.parametrize("key, value, message", [
    ("ckanext.webhooks.concurrency", "0", "Must be a positive integer"),
    ("ckanext.webhooks.max_per_host", "-3", "Must be a positive integer"),
    ("ckanext.webhooks.timeout", "ten", "Please enter an integer value"),
    ("ckanext.webhooks.anonymous_create_limit", "-1",
     "Must be a natural number"),
    ("ckanext.webhooks.retry_schedule", "5 abc", "'abc' is not a whole"),
    ("ckanext.webhooks.retry_schedule", "5 -30", "cannot be negative"),
    ("ckanext.webhooks.retry_schedule", " ".join(["5"] * 51),
     "At most 50 retries"),
])
def test_a_bad_value_is_refused_naming_the_option(key, value, message):
    config = dict(tk.config, **{key: value})
    with pytest.raises(CkanConfigurationException) as error:
        check_config(config)
    assert "{0}: ".format(key) in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize("key, value", [
    ("ckanext.webhooks.anonymous_create_limit", "0"),  # 0: no limit
    ("ckanext.webhooks.retry_schedule", ""),  # no retries
    ("ckanext.webhooks.retry_schedule", "0 1 2"),
])
def test_good_values_pass(key, value):
    check_config(dict(tk.config, **{key: value}))


def test_ckan_does_not_start_with_a_bad_value(tmp_path):
    """A command (the worker's, say) stops at once, naming the option."""
    ini = pathlib.Path(tk.config["__file__"])
    text = ini.read_text().replace("%(here)s", str(ini.parent)).replace(
        "[app:main]\n", "[app:main]\nckanext.webhooks.max_per_host = 0\n", 1)
    bad = tmp_path / "bad.ini"
    bad.write_text(text)
    ckan = pathlib.Path(sys.executable).parent / "ckan"
    done = subprocess.run([str(ckan), "-c", str(bad), "webhooks", "status"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ckanext.webhooks.max_per_host: Must be a positive integer" in (
        done.stdout + done.stderr)
