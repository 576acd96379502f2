"""awp: port-knocking firewall doors for Linux appliances."""

__version__ = "0.1.0"
