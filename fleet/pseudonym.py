"""Keyed pseudonyms for flats: what identifies a flat wherever its readings leave the database.

A flat's readings are personal data. Outside the database a flat is named only by
`flat-` + the first 11 hex digits of HMAC-SHA256(pseudonym key, flat_ref): stable (the same
flat keeps its name across meters and restarts), not reversible without the key, and neither
its flat_ref nor its meter's DevEUI. Changing ALLMENDE_PSEUDONYM_KEY renames every flat.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr

PREFIX = "flat-"
_DIGITS = 11  # PREFIX + 11 = 16 characters, the width of a device id; 44 bits


def flat_pseudonym(key: SecretStr | None, flat_ref: str) -> str:
    if key is None:
        raise ValueError("no pseudonym key: settings.with_keys() provides one")
    digest = hmac.new(key.get_secret_value().encode(), b"allmende-flat\0" + flat_ref.encode(),
                      hashlib.sha256).hexdigest()
    return PREFIX + digest[:_DIGITS]


def is_pseudonym(name: str) -> bool:
    return name.startswith(PREFIX)


def pseudonyms(key: SecretStr | None, flats: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{DevEUI: pseudonym of its flat} for (DevEUI, flat_ref) pairs."""
    return {dev_eui: flat_pseudonym(key, flat_ref) for dev_eui, flat_ref in flats}
