"""sim-fleet's pure parts: node names, the light templates from the command line, each node's own config, and
the fleet's defaults under the config file (nodeagent/simfleet.py, nodeagent/config.py ``load(defaults=)``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent import config
from nodeagent.errors import ConfigError
from nodeagent.simfleet import FLEET_DEFAULTS, fleet_config, node_config, node_names, template_from


def test_node_names_count_from_first() -> None:
    assert node_names("sim", 3) == ["sim1", "sim2", "sim3"]
    assert node_names("n-", 2, first=9) == ["n-9", "n-10"]


@pytest.mark.parametrize(
    ("prefix", "count", "says"),
    [("sim", 0, "--count: expected at least 1"), ("a/b", 2, "is not a node name"), ("x" * 64, 1, "not a node")],
)
def test_bad_names_are_refused(prefix: str, count: int, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        node_names(prefix, count)


def test_a_template_is_an_argv_split_like_a_shell_but_run_without_one() -> None:
    tpl = template_from("say=echo 'a b' $(x) ;")
    assert tpl.name == "say" and tpl.argv == ("echo", "a b", "$(x)", ";")
    assert tpl.heavy is False and tpl.timeout_s == 60.0


@pytest.mark.parametrize(
    ("spec", "says"),
    [("noop", "expected NAME=COMMAND"), ("=true", "expected NAME=COMMAND"), ("x=", "expected NAME=COMMAND"),
     ("x=echo 'open", "No closing quotation")],
)  # fmt: skip
def test_bad_templates_are_refused_by_name(spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        template_from(spec)


@given(st.text(max_size=40))
def test_template_parsing_never_raises_anything_but_a_config_error(spec: str) -> None:
    try:
        tpl = template_from(spec)
    except ConfigError:
        return
    assert tpl.argv and tpl.name == spec.partition("=")[0]


def test_fleet_templates_join_the_configs_and_keep_the_template_rules(tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text('[[jobs.template]]\nname = "mine"\nargv = ["true"]\n')
    base = config.load(conf, defaults=FLEET_DEFAULTS)
    cfg = fleet_config(base, [template_from("noop=true")])
    assert [t.name for t in cfg.jobs.template] == ["mine", "noop"]
    with pytest.raises(ConfigError, match="is a built-in job kind"):
        fleet_config(base, [template_from("hpl=true")])
    with pytest.raises(ConfigError, match="a second template named 'mine'"):
        fleet_config(base, [template_from("mine=false")])


def test_every_node_gets_its_own_name_state_dir_jobs_dir_and_client_id(tmp_path: Path) -> None:
    shared = config.from_mapping(
        {"agent": {"state_dir": "/var/lib/x"}, "mqtt": {"client_id": "shared"}, "jobs": {"work_dir": "/srv/jobs"}}
    )
    a, b = (node_config(shared, n, tmp_path) for n in ("sim1", "sim2"))
    assert (a.node_id, b.node_id) == ("sim1", "sim2")
    assert a.agent.state_dir == str(tmp_path / "sim" / "sim1") and a.work_dir == tmp_path / "sim" / "sim1" / "jobs"
    assert a.agent.state_dir != b.agent.state_dir and a.work_dir != b.work_dir
    assert a.mqtt.client_id == b.mqtt.client_id == ""  # the agent's default: picluster-agent-<node>


def test_fleet_defaults_lie_under_the_file_and_flags_over_both(tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text('[homeassistant]\nenabled = true\n[agent]\nlog_level = "info"\n')
    cfg = config.load(conf, defaults=FLEET_DEFAULTS, overrides={"agent": {"log_level": "error"}}, env={})
    assert cfg.homeassistant.enabled is True  # the file wins over the fleet's default
    assert cfg.prometheus.textfile == "" and cfg.jobs.systemd_scope == "off"  # the fleet's defaults
    assert cfg.agent.log_level == "error"  # a flag wins over everything
    plain = config.load(conf, env={})
    assert plain.prometheus.textfile != "" and plain.jobs.systemd_scope == "auto"  # no defaults: the built-ins
