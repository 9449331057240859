"""Device drivers: each one a class over a bus object (machine.I2C, UART, SPI) it is given."""
