"""dqpulse: streaming data-quality observability for Kafka topics."""

__version__ = "0.1.0"
