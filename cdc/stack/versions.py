"""Pinned versions of everything `cdc stack` provisions. Change them only here.

Pairs that must match: the Flink Kafka connector is built per Flink minor
(5.0.0-2.2 <-> Flink 2.2.x; none exists for 2.3), and Debezium 3.6 is built against
Kafka 4.3, so Connect runs 4.3 too.
"""

KAFKA = "4.3.1"
LOG4J = "2.25.3"
SLF4J = "2.0.17"
DEBEZIUM = "3.6.1.Final"
FLINK = "2.2.1"
FLINK_KAFKA_CONNECTOR = "5.0.0-2.2"
PINOT = "1.5.1"
POSTGRES_MAJOR_MIN = 13  # Debian bookworm ships 15

MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
