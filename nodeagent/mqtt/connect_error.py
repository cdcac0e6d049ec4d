"""Why a connection to the broker failed, in words an operator can act on, when retrying will not help by itself.

paho retries a failed connection quietly; these are the failures that need a person: the broker's certificate is
not trusted (no CA, or the wrong one), TLS spoken to a plain port, or plain MQTT spoken to a TLS port (the broker
then closes the connection without an MQTT answer). Pure: it reads the exception and the broker address only.
"""

from __future__ import annotations

import ssl

from nodeagent.mqtt.settings import Broker

CA_FIX = "set mqtt.ca_file to the CA that signed the broker's certificate (piclusterctl: --mqtt-ca-file)"


def explain(exc: BaseException | None, broker: Broker) -> str:
    """Words for a failed connection attempt (the exception paho raised), or "" when it may pass by retrying."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or str(exc)
        return f"the broker's TLS certificate at {broker.host}:{broker.port} is not trusted ({why}): {CA_FIX}"
    if broker.tls and isinstance(exc, (ConnectionResetError, ssl.SSLEOFError)):
        # A plain MQTT broker reads the TLS greeting as a broken MQTT packet and drops the connection.
        return (
            f"{broker.host}:{broker.port} dropped the connection during the TLS handshake: it is most likely a plain "
            "MQTT port; use mqtt:// for it, or the broker's TLS port (8883)"
        )
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or str(exc)).lower()
        if "certificate_required" in reason or "certificate required" in reason:
            return (
                f"the broker at {broker.host}:{broker.port} wants a client certificate: set mqtt.cert_file and "
                "mqtt.key_file (piclusterctl: PICLUSTER_MQTT_CERT_FILE and PICLUSTER_MQTT_KEY_FILE)"
            )
        if "unknown_ca" in reason or "bad_certificate" in reason or "certificate_unknown" in reason:
            return (
                f"the broker at {broker.host}:{broker.port} does not accept this client's certificate "
                f"({exc.reason}): use one signed by the broker's CA"
            )
        if "wrong_version_number" in reason or "wrong version number" in reason or "record layer" in reason:
            return (
                f"{broker.host}:{broker.port} does not answer TLS: it is a plain MQTT port; use mqtt:// for it, "
                "or the broker's TLS port (8883)"
            )
        return f"the TLS handshake with {broker.host}:{broker.port} failed ({exc.reason or exc}): {CA_FIX}"
    return ""


def closed_early(broker: Broker) -> str:
    """Words for a connection the broker closed before answering MQTT's CONNECT."""
    if broker.tls:
        return (
            f"the broker at {broker} closed the connection before answering: it may want a client certificate "
            "signed by its CA (mqtt.cert_file and mqtt.key_file), or allow no more clients"
        )
    return (
        f"the broker at {broker} closed the connection before answering MQTT: if port {broker.port} is its TLS port, "
        "use mqtts:// and the CA (mqtt.ca_file)"
    )
