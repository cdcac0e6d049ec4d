"""The MQTT room: the broker settings and login (``settings``), the paho session (``link``), and the events kept on
disk until the broker acknowledges them (``spool``, ``outbox``)."""
