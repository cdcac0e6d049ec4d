"""The package's version, and the wire protocol version: every message carries ``v``; a change that old peers
cannot read bumps it."""

__version__ = "0.1.0"  # picluster's own (the .deb takes it from here: packaging/build-deb.sh)

PROTOCOL_VERSION = 1
# The topic tree carries the major version too, so two incompatible fleets can share one broker.
TOPIC_ROOT = f"picluster/v{PROTOCOL_VERSION}"
