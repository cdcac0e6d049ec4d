"""Config loading: defaults, precedence, one-line errors, and docs/configuration.md in step with the code."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent import config
from nodeagent.errors import ConfigError
from nodeagent.hw.fans.base import FanConfig
from tests.doc_defaults import toml_default

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""), env={})
    assert cfg.agent.tick_s == 1.0 and cfg.broker == config.Broker("localhost", 1883)
    assert cfg.jobs.kinds == ("hpl",) and cfg.work_dir == Path("/var/lib/picluster/jobs")
    assert cfg.node_id  # the host name


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nbroker = "mqtt://file:1"\n[hardware]\nbackend = "real"\n')
    assert config.load(path, env={}).mqtt.broker == "mqtt://file:1"
    env = {"PICLUSTER_BROKER": "mqtts://env", "PICLUSTER_BACKEND": "sim"}
    cfg = config.load(path, env=env)
    assert cfg.broker == config.Broker("env", 8883, tls=True) and cfg.hardware.backend == "sim"
    cfg = config.load(path, env=env, overrides={"mqtt": {"broker": "flag:5"}})
    assert cfg.broker == config.Broker("flag", 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt]\nkeepalive_s = '30s'\n", "mqtt.keepalive_s: expected a whole number, got '30s'"),
        ("[agent]\ntick = 2\n", 'agent.tick: unknown key (did you mean "tick_s"?)'),
        ("[agnet]\n", 'agnet: unknown key (did you mean "agent"?)'),
        ("agent = 3\n", "agent: expected a table [agent], got int"),
        ("[agent]\ntick_s = 0\n", "agent.tick_s: expected a number above 0, got 0.0"),
        ("[agent]\nnode_id = 'a/b'\n", "agent.node_id: expected 1-64 letters"),
        ("[hardware]\nbackend = 'fake'\n", 'hardware.backend: expected one of "auto", "real", "sim", got \'fake\''),
        ("[mqtt]\nbroker = 'http://x'\n", "mqtt.broker: expected a broker URL"),
        ("[jobs]\nkinds = 'hpl'\n", "jobs.kinds: expected a list of strings, got 'hpl'"),
        ("[jobs]\nmpirun_args = ['-x', 3]\n", "jobs.mpirun_args[1]: expected a string, got 3"),
        ("[sim]\ncores = 0\n", "sim.cores: expected at least 1, got 0"),
        ("[mqtt]\nreconnect_min_s = 10.0\nreconnect_max_s = 5.0\n", "mqtt.reconnect_max_s: expected a number at least"),
        ("[agent\n", "not valid TOML"),
    ],
)
def test_bad_files_give_one_line_naming_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml", env={})


def test_agent_exits_2_with_one_line_on_a_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\ntick_s = 'fast'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nodeagent", "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"picluster-agent: {path}: agent.tick_s: expected a number, got 'fast'"


@pytest.mark.parametrize("url", ["mqtt://h:99999", "ftp://h", "mqtt://:1883", "mqtt://h:port"])
def test_broker_url_errors(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(url)):
        config.Broker.parse(url)


def _doc_tables() -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = {}
    section = ""
    for line in DOC.read_text().splitlines():
        if m := re.match(r"^## \[\[?(\w+)\]\]?", line):
            section = m.group(1)
            tables[section] = {}
        elif section and (m := re.match(r"^\| `(\w+)` \| `(.*?)` \|", line)):
            tables[section][m.group(1)] = m.group(2)
    return tables


def test_docs_list_every_key_with_the_code_default() -> None:
    doc = _doc_tables()
    code = {
        name: {
            f.name: toml_default(f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)
        }
        for name, cls in [*config._SECTIONS.items(), ("fan", FanConfig)]
        if name != "policy"  # docs/policy.md, checked by tests/unit/test_policy_fan.py
    }
    doc.pop("policy", None)
    assert doc == code
