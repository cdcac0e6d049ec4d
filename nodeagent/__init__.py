"""picluster node agent: watches a Raspberry Pi node's hardware, keeps it safe, and runs jobs sent over MQTT."""

__version__ = "0.1.0"
