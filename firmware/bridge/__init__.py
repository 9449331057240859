"""Bridge firmware: an ESP32 LoRa board as the gateway's serial LoRa modem (MicroPython)."""
