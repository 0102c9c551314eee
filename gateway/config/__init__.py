"""Gateway configuration: one TOML file, validated with specific errors."""

from gateway.config.example import EXAMPLE_CONFIG, write_example
from gateway.config.loader import default_config, load_config, parse_config
from gateway.config.model import (
    BleConfig,
    GatewayConfig,
    HttpConfig,
    MqttConfig,
    OpenDataConfig,
    SerialPortConfig,
    StorageConfig,
)

__all__ = [
    "EXAMPLE_CONFIG", "BleConfig", "GatewayConfig", "HttpConfig", "MqttConfig", "OpenDataConfig", "SerialPortConfig",
    "StorageConfig", "default_config", "load_config", "parse_config", "write_example",
]
