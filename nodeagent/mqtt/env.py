"""The environment variables a process that is not the agent (piclusterctl, the MPI launcher) takes its broker
login from. Names only, so piclusterctl's ``--help`` can show them without loading the MQTT settings."""

ENV_USERNAME = "PICLUSTER_MQTT_USERNAME"
ENV_PASSWORD = "PICLUSTER_MQTT_PASSWORD"
ENV_PASSWORD_FILE = "PICLUSTER_MQTT_PASSWORD_FILE"
ENV_CA_FILE = "PICLUSTER_MQTT_CA_FILE"
ENV_CERT_FILE = "PICLUSTER_MQTT_CERT_FILE"
ENV_KEY_FILE = "PICLUSTER_MQTT_KEY_FILE"
# Not a broker login but the operator's other credential: the private key piclusterctl signs commands with.
ENV_KEY = "PICLUSTER_KEY"
