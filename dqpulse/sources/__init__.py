"""Stream sources behind one interface: Kafka (confluent-kafka or kafka-python) and the
built-in generator used by the demo and the incident benchmark."""
