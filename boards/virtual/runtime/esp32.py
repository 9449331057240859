"""`esp32` for the virtual board: the few calls firmware makes, over the state directory."""

import json

import vstate

WAKEUP_ALL_LOW = 0
WAKEUP_ANY_HIGH = 1
HEAP_DATA = 1
HEAP_EXEC = 2


def wake_on_ext0(pin=None, level=0):
    pass


def wake_on_ext1(pins=None, level=0):
    pass


def raw_temperature():
    return 120


class NVS:
    """Key-value storage in flash (namespace per instance), kept in the state directory."""

    def __init__(self, namespace):
        self._name = "nvs-" + namespace + ".json"
        try:
            with open(vstate._path(self._name)) as f:
                self._data = json.load(f)
        except OSError:
            self._data = {}

    def set_i32(self, key, value):
        self._data[key] = int(value)

    def get_i32(self, key):
        if key not in self._data:
            raise OSError(2)
        return self._data[key]

    def set_blob(self, key, value):
        self._data[key] = bytes(value).hex()

    def get_blob(self, key, buf):
        data = bytes.fromhex(self._data[key])
        buf[: len(data)] = data
        return len(data)

    def erase_key(self, key):
        del self._data[key]

    def commit(self):
        vstate._write(self._name, json.dumps(self._data))
