"""Files the packages ship stay true to the code: the commented default /etc/picluster/agent.toml and the man
pages of picluster-agent(8) and piclusterctl(1)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib

import pytest

from controller.args import build_parser
from nodeagent import config
from nodeagent.__main__ import _parser
from tests.packaging.conftest import REPO

SHIPPED = REPO / "packaging" / "agent.toml"
MAN = REPO / "docs" / "man"
# Sections of plain keys, every one of which the shipped file lists at its default. [policy.*] is documented in
# docs/policy.md and [[fan]] by the examples in the file.
FLAT = {name: cls for name, cls in config._SECTIONS.items() if name != "policy"}


def _defaults() -> config.AgentConfig:
    """The defaults, and the one key the shipped file sets on purpose: a node from the .deb obeys only signed
    commands, even if someone runs it with --sim."""
    return config.from_mapping({"security": {"require_signed": True}}, source=str(SHIPPED))


def test_the_shipped_config_requires_signed_commands_even_for_a_simulated_node() -> None:
    shipped = config.load(SHIPPED, env={}, overrides={"hardware": {"backend": "sim"}})
    assert shipped.security.require_signed is True and shipped.signed_only
    assert not config.from_mapping({"hardware": {"backend": "sim"}}).signed_only  # the bare default for --sim
    assert config.from_mapping({}).signed_only  # and for a real node


def _uncommented() -> dict[str, object]:
    """The shipped file with every `# key = value` line turned on (the examples, indented further, stay off)."""
    return tomllib.loads(re.sub(r"^# (\w+ = .*)$", r"\1", SHIPPED.read_text(), flags=re.M))


def test_the_shipped_config_loads_to_the_defaults() -> None:
    assert config.load(SHIPPED, env={}) == _defaults()


def test_the_shipped_config_lists_every_key_at_its_default() -> None:
    data = _uncommented()
    for name, cls in FLAT.items():
        listed = set(data.get(name, {}))  # type: ignore[arg-type]
        missing = {f.name for f in dataclasses.fields(cls)} - listed
        assert not missing, f"packaging/agent.toml: [{name}] does not list {sorted(missing)}"
    assert config.from_mapping(data, source=str(SHIPPED)) == _defaults()


def test_the_fan_examples_in_the_shipped_config_are_valid() -> None:
    lines = [line[4:] for line in SHIPPED.read_text().splitlines() if line.startswith("#   ")]
    tables = tomllib.loads("\n".join(lines))["fan"]
    assert [t["backend"] for t in tables] == ["pwmfan", "sysfs-pwm", "smart-unit", "gpio"]
    config.from_mapping({"fan": tables})


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], list[str]]:
    """Every (sub)command of ``parser`` and its long options."""
    out = {path: [s for a in parser._actions for s in a.option_strings if s.startswith("--")]}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_commands(sub, (*path, name)))
    return out


@pytest.mark.parametrize(
    ("page", "parser"), [("picluster-agent.8", _parser()), ("piclusterctl.1", build_parser())], ids=["agent", "ctl"]
)
def test_man_page_documents_every_subcommand_and_option(page: str, parser: argparse.ArgumentParser) -> None:
    text = (MAN / page).read_text().replace("\\-", "-")
    for path, options in _commands(parser).items():
        for word in path:
            assert re.search(rf"^\.B[IR]* .*\b{word}\b", text, re.M), f"docs/man/{page}: no {' '.join(path)}"
        for option in options:
            assert re.search(rf"{option}\b", text), f"docs/man/{page}: {' '.join(path)} {option} is not documented"
