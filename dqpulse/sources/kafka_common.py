"""What both Kafka clients share: connection settings and the dead-letter headers.

The two clients spell their settings differently (``sasl.username`` in librdkafka,
``sasl_plain_username`` in kafka-python); :func:`connection_config` reads the settings
once and each client passes its spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dqpulse.config import Settings
from dqpulse.records import RawMessage

#: librdkafka (confluent-kafka) names of the connection settings
LIBRDKAFKA_NAMES = {
    "bootstrap": "bootstrap.servers", "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism", "sasl_username": "sasl.username",
    "sasl_password": "sasl.password", "ssl_cafile": "ssl.ca.location",
}
#: kafka-python names of the connection settings
KAFKA_PYTHON_NAMES = {
    "bootstrap": "bootstrap_servers", "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism", "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password", "ssl_cafile": "ssl_cafile",
}


def connection_config(settings: Settings, names: Mapping[str, str]) -> dict[str, Any]:
    """Bootstrap servers, security protocol and the SASL/SSL settings that are set, under
    the client's ``names``; the password is revealed here only."""
    values: dict[str, Any] = {
        "bootstrap": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    optional = {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_username": settings.kafka_sasl_username,
        "sasl_password": (settings.kafka_sasl_password.get_secret_value()
                          if settings.kafka_sasl_password else None),
        "ssl_cafile": settings.kafka_ssl_cafile,
    }
    values.update({key: value for key, value in optional.items() if value})
    return {names[key]: value for key, value in values.items()}


def dead_letter_headers(message: RawMessage, reason: str, detail: str
                        ) -> list[tuple[str, bytes]]:
    """Why a message was dead-lettered and where it came from, as Kafka headers."""
    return [("dqpulse.reason", reason.encode()), ("dqpulse.detail", detail[:500].encode()),
            ("dqpulse.source",
             f"{message.topic}:{message.partition}:{message.offset}".encode())]
