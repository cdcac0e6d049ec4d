"""Home Assistant over MQTT discovery: pure document and state builders, and the thin bridge that publishes them."""
