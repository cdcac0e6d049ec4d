"""Wire protocol version. Every message carries ``v``; a change that old peers cannot read bumps it."""

PROTOCOL_VERSION = 1
# The topic tree carries the major version too, so two incompatible fleets can share one broker.
TOPIC_ROOT = f"picluster/v{PROTOCOL_VERSION}"
