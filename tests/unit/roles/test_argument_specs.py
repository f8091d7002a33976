"""Every role's meta/argument_specs.yml tells the truth about its defaults/main.yml.

ansible-core validates a role's input with the spec but takes the values from defaults/main.yml: a
``default`` in the spec is documentation only, and it must be the value the role really uses. A default
computed by a template (``{{ unboxed_overlay_dir | default('/overlay') }}/merged``) has no single value:
the spec then says it in words and has no ``default`` key.
"""

from __future__ import annotations

import os

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = sorted(name for name in os.listdir(os.path.join(REPO, 'roles'))
               if os.path.isdir(os.path.join(REPO, 'roles', name)))


def load(role, *parts):
    path = os.path.join(REPO, 'roles', role, *parts)
    if not os.path.exists(path):
        return {}
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle) or {}


def is_template(value) -> bool:
    if isinstance(value, list):
        return any(is_template(item) for item in value)
    return isinstance(value, str) and '{{' in value


@pytest.mark.parametrize('role', ROLES)
def test_every_default_of_the_spec_is_the_roles_default(role):
    defaults = load(role, 'defaults', 'main.yml')
    specs = load(role, 'meta', 'argument_specs.yml')['argument_specs']
    wrong = []
    for entry_point, spec in specs.items():
        for name, option in (spec.get('options') or {}).items():
            if name not in defaults:
                if 'default' in option:
                    wrong.append(f'{entry_point}: {name} has a default in the spec but none in defaults/main.yml')
                continue
            actual = defaults[name]
            if is_template(actual):
                if 'default' in option:
                    wrong.append(f'{entry_point}: {name} is computed ({actual}) but the spec claims {option["default"]!r}')
            elif option.get('default') != actual:
                wrong.append(f'{entry_point}: {name} is {actual!r} in defaults/main.yml, the spec says {option.get("default")!r}')
    assert not wrong, '\n'.join(wrong)


@pytest.mark.parametrize('role', ROLES)
def test_every_default_is_documented_by_an_entry_point(role):
    defaults = load(role, 'defaults', 'main.yml')
    specs = load(role, 'meta', 'argument_specs.yml')['argument_specs']
    documented = {name for spec in specs.values() for name in (spec.get('options') or {})}
    assert sorted(set(defaults) - documented) == []
