"""Fans: the interface and its configuration (``base``), one module per backend, and ``factory.make_fan``."""
