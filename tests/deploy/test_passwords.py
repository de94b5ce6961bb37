"""The broker password file: argon2 hashes that verify, and a stable file when passwords do not change."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
from argon2 import PasswordHasher

from gateway.provision.passwords import PasswordFileError, parse_password_file, render_password_file
from tests.deploy.conftest import REPO

# Cheap parameters keep the tests fast; the production file uses PasswordHasher's defaults.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def test_every_node_gets_a_verifiable_argon2_line() -> None:
    text = render_password_file({"nd-ec-1": "ec-pass", "nd-ph-1": "ph-pass"}, hasher=FAST)
    lines = text.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["nd-ec-1", "nd-ph-1"]
    hashes = parse_password_file(text)
    assert hashes["nd-ph-1"].startswith("$argon2id$")
    assert FAST.verify(hashes["nd-ph-1"], "ph-pass")
    assert FAST.verify(hashes["nd-ec-1"], "ec-pass")
    assert "ph-pass" not in text


def test_unchanged_passwords_keep_their_hash_so_reruns_change_nothing() -> None:
    first = render_password_file({"nd-a": "alpha", "nd-b": "bravo"}, hasher=FAST)
    assert render_password_file({"nd-a": "alpha", "nd-b": "bravo"}, first, hasher=FAST) == first


def test_changed_added_and_removed_nodes_are_reflected() -> None:
    first = render_password_file({"nd-a": "alpha", "nd-b": "bravo"}, hasher=FAST)
    second = render_password_file({"nd-a": "alpha", "nd-c": "charlie", "nd-b": "new"}, first, hasher=FAST)
    old, new = parse_password_file(first), parse_password_file(second)
    assert new["nd-a"] == old["nd-a"]
    assert new["nd-b"] != old["nd-b"] and FAST.verify(new["nd-b"], "new")
    assert FAST.verify(new["nd-c"], "charlie")
    assert render_password_file({"nd-a": "alpha"}, second, hasher=FAST).splitlines() == [f"nd-a:{old['nd-a']}"]


def test_a_garbled_existing_line_is_rehashed() -> None:
    text = render_password_file({"nd-a": "alpha"}, "nd-a:not-a-hash\n# comment\n", hasher=FAST)
    assert FAST.verify(parse_password_file(text)["nd-a"], "alpha")


def test_hashes_made_with_weaker_parameters_are_upgraded() -> None:
    weak = render_password_file({"nd-a": "alpha"}, hasher=FAST)
    strong = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    upgraded = parse_password_file(render_password_file({"nd-a": "alpha"}, weak, hasher=strong))["nd-a"]
    assert upgraded != parse_password_file(weak)["nd-a"]
    assert not strong.check_needs_rehash(upgraded)


@pytest.mark.parametrize("user", ["", "nd:1", "nd 1", "nd\n1", "-nd"])
def test_usernames_that_would_break_the_line_format_are_refused(user: str) -> None:
    with pytest.raises(PasswordFileError, match="invalid broker username"):
        render_password_file({user: "secret"}, hasher=FAST)


def test_empty_passwords_are_refused() -> None:
    with pytest.raises(PasswordFileError, match="empty"):
        render_password_file({"nd-a": ""}, hasher=FAST)


def _ansible_filter() -> Callable[..., Any]:
    """Load the role's filter plugin the way Ansible does: by file path."""
    path = REPO / "ansible/roles/hydro_gateway/filter_plugins/mqtt_passwords.py"
    spec = importlib.util.spec_from_file_location("hydro_gateway_filter_plugin", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    filters: dict[str, Callable[..., Any]] = module.FilterModule().filters()
    return filters["hydro_gateway_password_file"]


def test_ansible_filter_writes_the_same_format_and_keeps_matching_hashes() -> None:
    existing = render_password_file({"nd-a": "alpha"}, hasher=PasswordHasher())
    text = _ansible_filter()({"nd-a": "alpha", "nd-b": "bravo"}, existing)
    entries = parse_password_file(text)
    assert entries["nd-a"] == parse_password_file(existing)["nd-a"]
    assert PasswordHasher().verify(entries["nd-b"], "bravo")
