"""Upstream forwarding: MQTT QoS 1 from the persisted outbox."""

from gateway.upstream.mqtt import MqttUpstream, encode_report, topic_for

__all__ = ["MqttUpstream", "encode_report", "topic_for"]
