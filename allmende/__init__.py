"""allmende: edge IoT for a city's LoRaWAN sensor network."""

__version__ = "0.1.0"
