"""Secrets of the fleet: API tokens, AppKey encryption at rest, broker password hashes."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

TOKEN_PREFIX = "alm_"


class KeyDecryptionError(Exception):
    """A stored key could not be decrypted: wrong ALLMENDE_SECRET_KEY or tampered data."""

    def __init__(self, dev_eui: str) -> None:
        super().__init__(f"cannot decrypt the AppKey of {dev_eui}: is ALLMENDE_SECRET_KEY the one "
                         "the key was stored with?")
        self.dev_eui = dev_eui


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_app_key() -> str:
    return secrets.token_hex(16).upper()


class KeyVault:
    """AES-256-GCM over AppKeys, bound to their DevEUI so a row cannot be swapped to another."""

    def __init__(self, secret: SecretStr | None) -> None:
        if secret is None:
            raise ValueError("no secret key: settings.with_keys() provides one")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"allmende-fleet",
                    info=b"device root keys v1")
        self._aead = AESGCM(hkdf.derive(secret.get_secret_value().encode()))

    def encrypt(self, dev_eui: str, app_key_hex: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, bytes.fromhex(app_key_hex), dev_eui.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, dev_eui: str, stored: str) -> str:
        try:
            raw = base64.b64decode(stored.removeprefix("v1:"))
            return self._aead.decrypt(raw[:12], raw[12:], dev_eui.encode()).hex().upper()
        except (InvalidTag, ValueError) as exc:
            raise KeyDecryptionError(dev_eui) from exc


# Mosquitto 2's password-file format ($7$): PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt.
_MOSQUITTO_ITERATIONS = 101


def mosquitto_password_hash(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _MOSQUITTO_ITERATIONS)
    return (f"$7${_MOSQUITTO_ITERATIONS}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")
