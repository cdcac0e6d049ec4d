"""Whom this node obeys: the operator keys in its command gate, its own key for the MPI launches it leads, and
what its Home Assistant bridge (which cannot sign) may still ask. Read at start; the gate again on every reload."""

from __future__ import annotations

import logging
from dataclasses import replace

from nodeagent.config import AgentConfig
from nodeagent.ha.config import HomeAssistantConfig
from nodeagent.security.gate import CommandGate
from nodeagent.security.keys import KeyFileError, SigningKey, load_or_create
from nodeagent.security.operators import describe, read_operator_keys

log = logging.getLogger("picluster.agent")


def node_key(cfg: AgentConfig) -> SigningKey | None:
    """This node's own key (``security.node_key_file``, by default in the state directory), made on the first
    start. Unusable: logged, and the node cannot sign its MPI launches (members that require signatures refuse
    them, saying so); everything else works."""
    path = cfg.node_key_path
    try:
        key, made = load_or_create(path, cfg.node_id)
    except (KeyFileError, OSError) as exc:
        log.error("event=node_key_unusable path=%s reason=%r fix='remove it to make a new one'", path, str(exc))
        return None
    log.info("event=node_key path=%s id=%s made=%s", path, key.public.id, made)
    return key


def configure_gate(gate: CommandGate, cfg: AgentConfig) -> None:
    """[security] into the gate: at start and on every reload (the operator keys are read again)."""
    keys = read_operator_keys(cfg.security.operator_keys_dir)
    for problem in keys.problems:
        log.warning("event=operator_keys_problem reason=%r", problem)
    gate.configure(
        keys.keys,
        signed_only=cfg.signed_only,
        max_skew_s=cfg.security.max_skew_s,
        nonce_max=cfg.security.nonce_cache_max,
    )
    level = logging.WARNING if cfg.signed_only and not keys.keys else logging.INFO
    log.log(level, "event=operator_keys require_signed=%s %s", cfg.signed_only, describe(keys))
    if not cfg.signed_only:  # loudly: whoever can publish on the broker can command this node
        why = "unset on a simulated node" if cfg.security.require_signed is None else "false in the config"
        log.warning(
            "event=unsigned_commands_obeyed reason='security.require_signed is %s' "
            "fix='set security.require_signed = true (docs/security.md)'",
            why,
        )


def ha_config(cfg: AgentConfig) -> HomeAssistantConfig:
    """[homeassistant] as the node obeys it: on a node that requires signed commands, Home Assistant (which cannot
    sign) may set the fan and identify, never restart or reboot the node."""
    ha = cfg.homeassistant
    if cfg.signed_only and (ha.allow_restart or ha.allow_reboot):
        log.warning(
            "event=ha_restart_refused reason='Home Assistant cannot sign, and this node obeys only signed commands' "
            "fix='set security.require_signed = false to let it restart or reboot the node'"
        )
        return replace(ha, allow_restart=False, allow_reboot=False)
    return ha
