"""The gate every command a node receives from the broker passes before it is obeyed.

In order: the payload is decoded (bounded, pre-scanned); an unsigned command passes only when the node does not
require signatures. A signed one must have been signed for the topic it came on, by a key the node trusts for
it, with a signature that verifies, fresh (within ``security.max_skew_s`` of the node's clock, and not before this
agent started), and with a nonce its key has not used before. Only then is the body decoded as a command and held
to what its key may ask: an operator key anything but a launch; a cluster job's leader key (named in the
operator's job) only the launch of that job's MPI daemon, on the launch topic of that leader.

Replays across a restart: the nonces live in memory, so a command signed before the agent started is refused
(a restart takes longer than a command takes to arrive, and the broker does not queue commands for an agent,
whose session is clean). Nothing is written to disk per command, so a full disk changes nothing here.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from nodeagent.errors import ProtocolError, clip, echo
from nodeagent.protocol import codec, envelope
from nodeagent.protocol.envelope import Envelope
from nodeagent.protocol.messages import Command, from_wire, peek
from nodeagent.security.keys import PublicKey

OPERATOR_MAY = ("run", "cancel", "fan", "identify", "power", "resend")
Role = Literal["operator", "leader", "unsigned"]
SIGN_HOW = (
    "sign it: piclusterctl keygen, install the .pub it prints in /etc/picluster/operators.d/ on every node, then "
    "piclusterctl --key FILE (or PICLUSTER_KEY); docs/security.md, 'Operator signing keys'"
)
# Why a command was refused, by code; every code is its own reason (an event's data.auth).
CODES = ("unsigned", "unknown_key", "bad_signature", "wrong_topic", "stale", "replayed", "busy", "not_allowed")


class Refused(Exception):
    """A command the gate will not pass. ``reply`` and ``nodes`` come from the (unverified) body, best effort:
    whom to answer, and whether a cluster command was meant for this node at all."""

    def __init__(self, code: str, reason: str, *, reply: str = "", nodes: tuple[str, ...] = (), key: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = clip(reason, 600)
        self.reply = reply
        self.nodes = nodes
        self.key = key  # the key's name or id, for the log


@dataclass(frozen=True)
class LaunchSigner:
    """The key a member accepts its job's MPI launch under: the leader's, as the operator's signed job named it."""

    job_id: str
    leader: str
    key: PublicKey


@dataclass(frozen=True)
class Admitted:
    """A command the gate passed: who signed it (``signer``: the key's name, "" unsigned) in which ``role``.
    ``ignored``: why a signature was not honoured on a node that accepts unsigned commands (logged)."""

    cmd: Command
    signer: str
    role: Role
    ignored: str = ""


class NonceCache:
    """The nonces each key has used while they could still be fresh, at most ``max_per_key`` per key."""

    def __init__(self, max_per_key: int) -> None:
        self.max_per_key = max_per_key
        self._seen: dict[str, collections.OrderedDict[bytes, float]] = {}

    def add(self, key: str, nonce: bytes, expires: float, now: float) -> Literal["new", "seen", "full"]:
        """Remember ``nonce`` for ``key`` until ``expires``; say whether it was new, seen, or the key's share full."""
        seen = self._seen.setdefault(key, collections.OrderedDict())
        if nonce in seen and seen[nonce] >= now:
            return "seen"
        while seen and next(iter(seen.values())) < now:  # oldest first; all expire within 2 x skew anyway
            seen.popitem(last=False)
        if len(seen) >= self.max_per_key:
            for old in [n for n, until in seen.items() if until < now]:
                del seen[old]
            if len(seen) >= self.max_per_key:
                return "full"
        seen[nonce] = expires
        return "new"

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())


class CommandGate:
    """One node's gate. ``launch_signer()`` names the leader key its running member job accepts, if any."""

    def __init__(
        self,
        keys: Mapping[str, PublicKey],
        *,
        signed_only: bool,
        max_skew_s: float = 60.0,
        nonce_max: int = 10000,
        clock: Callable[[], float] = time.time,
        launch_signer: Callable[[], LaunchSigner | None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.started = clock()  # commands signed before this are refused: their nonces were not kept
        self.launch_signer = launch_signer
        self.keys: Mapping[str, PublicKey] = {}
        self.signed_only = signed_only
        self.max_skew_s = max_skew_s
        self.nonces = NonceCache(nonce_max)
        self.configure(keys, signed_only=signed_only, max_skew_s=max_skew_s, nonce_max=nonce_max)

    def configure(self, keys: Mapping[str, PublicKey], *, signed_only: bool, max_skew_s: float, nonce_max: int) -> None:
        """New settings (a reload): the nonces already seen stay."""
        self.keys, self.signed_only, self.max_skew_s = dict(keys), signed_only, max_skew_s
        self.nonces.max_per_key = nonce_max

    def admit(self, topic: str, payload: bytes, *, launch_sender: str | None = None) -> Admitted:
        """Pass ``payload`` received on ``topic`` or raise Refused (or ProtocolError: not a command at all, or the
        authentic body of a signed one is invalid). ``launch_sender``: the leader named by a launch topic."""
        data = codec.unpackb(payload)
        if not envelope.is_envelope(data):
            if self.signed_only:
                reply, nodes = peek(data)
                raise Refused(
                    "unsigned",
                    f"unsigned command refused: this node obeys only signed commands (security.require_signed); "
                    f"{SIGN_HOW}",
                    reply=reply,
                    nodes=nodes,
                )
            return Admitted(from_wire(data, Command), "", "unsigned")
        env = envelope.from_wire(data)
        try:
            signer, role = self._verify(env, topic)
            cmd = _body(env)
            self._authorize(cmd, signer, role, launch_sender)
        except Refused as refused:
            if self.signed_only:
                raise
            # Unsigned commands would pass here: so does this one, and why its signature did not is logged.
            return Admitted(_body(env), "", "unsigned", ignored=f"{refused.code}: {refused.reason}")
        return Admitted(cmd, signer.name, role)

    # --- inside ----------------------------------------------------------------------------------------------
    def _verify(self, env: Envelope, topic: str) -> tuple[PublicKey, Role]:
        body = _peek_body(env.body)
        reply, nodes = body

        def refuse(code: str, reason: str, key: str = env.key) -> Refused:
            return Refused(code, reason, reply=reply, nodes=nodes, key=key)

        if env.topic != topic:
            raise refuse(
                "wrong_topic",
                f"signed for topic {echo(env.topic)} but received on {echo(topic)}: a command replayed to another "
                "node or topic",
            )
        key, role = self.keys.get(env.key), "operator"
        launch = self.launch_signer()
        if key is None and launch is not None and launch.key.id == env.key:
            key, role = launch.key, "leader"
        if key is None:
            known = ", ".join(sorted(k.name for k in self.keys.values())) or "none"
            raise refuse(
                "unknown_key",
                f"signed by key {env.key}, which this node does not trust (its operator keys: {clip(known, 200)}); "
                "install the key's .pub in /etc/picluster/operators.d/ (security.operator_keys_dir) and "
                "systemctl reload picluster-agent",
            )
        name = key.name or env.key
        if not key.verify(env.sig, env.signed_bytes()):
            raise refuse("bad_signature", f"the signature does not verify with key {name}: altered or forged", name)
        now, skew = self.clock(), self.max_skew_s
        age = now - env.ts
        if abs(age) > skew:
            when = f"{age:.0f} s ago" if age > 0 else f"{-age:.0f} s in the future"
            raise refuse(
                "stale",
                f"signed {when}, beyond security.max_skew_s ({skew:g} s): a delayed or replayed command, or a clock "
                "that is off (compare both clocks: timedatectl; NTP fixes it)",
                name,
            )
        if env.ts < self.started:
            raise refuse(
                "stale",
                f"signed {self.started - env.ts:.1f} s before this agent started: a command from before a restart is "
                "never obeyed after it (send it again; if this repeats, the sender's clock is behind: timedatectl)",
                name,
            )
        seen = self.nonces.add(env.key, env.nonce, env.ts + skew, now)
        if seen == "seen":
            raise refuse(
                "replayed", f"replayed: this node has already obeyed this command (key {name}, same nonce)", name
            )
        if seen == "full":
            raise refuse(
                "busy",
                f"key {name} signed more than {self.nonces.max_per_key} commands within {2 * skew:g} s "
                "(security.nonce_cache_max); try again shortly",
                name,
            )
        return key, role  # type: ignore[return-value]

    def _authorize(self, cmd: Command, key: PublicKey, role: Role, launch_sender: str | None) -> None:
        def refuse(reason: str) -> Refused:
            return Refused("not_allowed", reason, reply=cmd.id, nodes=cmd.nodes, key=key.name)

        if role == "operator" and cmd.cmd not in OPERATOR_MAY:
            raise refuse(
                f"an operator key ({key.name}) does not sign a {cmd.cmd}: a launch must be signed by the cluster "
                "job's leader, with the node key the operator's job named"
            )
        if role == "leader":
            launch = self.launch_signer()
            assert launch is not None
            if cmd.cmd != "launch" or cmd.job_id != launch.job_id or launch_sender != launch.leader:
                raise refuse(
                    f"the key of {launch.leader} signs only the launch of job {launch.job_id}'s MPI daemon on "
                    f"its launch topic, not a {cmd.cmd} for {echo(cmd.job_id or cmd.id, 80)}"
                )


def _body(env: Envelope) -> Command:
    """The command inside a (verified) envelope; ProtocolError when it is not a valid one."""
    return from_wire(codec.unpackb(env.body), Command)


def _peek_body(body: bytes) -> tuple[str, tuple[str, ...]]:
    try:
        return peek(codec.unpackb(body))
    except ProtocolError:
        return "", ()
