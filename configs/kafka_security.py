"""Kafka connection-security keys, shared by the pipeline's and the matching service's configs."""

from yacs.config import CfgNode as CN


def add_security_keys(node: CN) -> CN:
    """Add SASL/TLS settings to a config node (``stream.kafka_io`` turns them into client options)."""
    node.SECURITY_PROTOCOL = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    node.SASL_MECHANISM = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    node.SASL_USERNAME = ""
    node.SASL_PASSWORD_ENV = "KAFKA_SASL_PASSWORD"  # the password is read from this environment variable
    node.SSL_CAFILE = ""
    node.SSL_CERTFILE = ""
    node.SSL_KEYFILE = ""
    return node
