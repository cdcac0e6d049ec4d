"""picluster node agent: watches a Raspberry Pi node's hardware, keeps it safe, and runs jobs sent over MQTT."""

from nodeagent.protocol.version import __version__

__all__ = ["__version__"]
