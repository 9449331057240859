"""LoRaWAN 1.0.x cryptography on cryptolib AES-128 (ECB): AES-CMAC, MICs, ciphers, session keys.

Byte strings are in on-air order (DevAddr and DevNonce little-endian, as in the frame).
"""

from cryptolib import aes
from micropython import const

UP = const(0)
DOWN = const(1)

_MODE_ECB = const(1)
_RB = const(0x87)  # the constant of GF(2^128) doubling in CMAC (RFC 4493)
_TAG_CIPHER = const(0x01)  # first byte of the Ai blocks of the FRMPayload cipher
_TAG_MIC = const(0x49)  # first byte of the B0 block of a data-frame MIC


def _double(dst, src):
    # dst = src * x in GF(2^128): shift left by one bit, fold the carry back with Rb.
    carry = 0
    for i in range(15, -1, -1):
        b = src[i]
        dst[i] = ((b << 1) & 0xFF) | carry
        carry = b >> 7
    if carry:
        dst[15] ^= _RB


def cmac(key, msg, first=None):
    """AES-CMAC (RFC 4493) of `first` (one 16-byte block, optional) followed by `msg`."""
    cipher = aes(key, _MODE_ECB)
    x = bytearray(16)
    if first is not None:
        if len(msg):
            cipher.encrypt(first, x)
        else:
            msg = first
    n = len(msg)
    full = (n - 1) // 16 if n else 0  # blocks before the last one
    for i in range(full):
        base = i * 16
        for j in range(16):
            x[j] ^= msg[base + j]
        cipher.encrypt(x, x)
    k = bytearray(16)
    cipher.encrypt(k, k)  # L = E(K, 0^128)
    _double(k, k)  # K1
    rest = n - full * 16
    if rest < 16:
        _double(k, k)  # K2 for a padded last block
        k[rest] ^= 0x80
    base = full * 16
    for j in range(rest):
        k[j] ^= msg[base + j]
    for j in range(16):
        x[j] ^= k[j]
    cipher.encrypt(x, x)
    return x


def _block(tag, direction, dev_addr, fcnt):
    b = bytearray(16)
    b[0] = tag
    b[5] = direction
    b[6:10] = dev_addr
    b[10] = fcnt & 0xFF
    b[11] = (fcnt >> 8) & 0xFF
    b[12] = (fcnt >> 16) & 0xFF
    b[13] = (fcnt >> 24) & 0xFF
    return b


def data_mic(nwk_s_key, direction, dev_addr, fcnt, msg):
    """MIC (4 bytes) of a data frame `msg` = MHDR | FHDR | FPort | FRMPayload, 32-bit `fcnt`."""
    b0 = _block(_TAG_MIC, direction, dev_addr, fcnt)
    b0[15] = len(msg)
    return cmac(nwk_s_key, msg, b0)[:4]


def crypt_payload(key, direction, dev_addr, fcnt, buf):
    """Encrypts or decrypts (the same operation) the FRMPayload in `buf` in place."""
    cipher = aes(key, _MODE_ECB)
    a = _block(_TAG_CIPHER, direction, dev_addr, fcnt)
    s = bytearray(16)
    n = len(buf)
    for base in range(0, n, 16):
        a[15] = base // 16 + 1
        cipher.encrypt(a, s)
        for j in range(min(16, n - base)):
            buf[base + j] ^= s[j]


def join_mic(app_key, msg):
    """MIC of a join-request or of a decrypted join-accept (MHDR .. CFList), 4 bytes."""
    return cmac(app_key, msg)[:4]


def decrypt_join_accept(app_key, enc, out):
    """Decrypts the join-accept after its MHDR (16 or 32 bytes) into `out`.

    The network encrypts with AES decrypt, so the device decrypts with AES encrypt.
    """
    cipher = aes(app_key, _MODE_ECB)
    src = memoryview(enc)
    dst = memoryview(out)
    for base in range(0, len(enc), 16):
        cipher.encrypt(src[base : base + 16], dst[base : base + 16])


def session_keys(app_key, app_nonce, net_id, dev_nonce):
    """(NwkSKey, AppSKey) from a join: AppNonce and NetID 3 bytes, DevNonce 2 bytes, on air."""
    cipher = aes(app_key, _MODE_ECB)
    b = bytearray(16)
    b[1:4] = app_nonce
    b[4:7] = net_id
    b[7:9] = dev_nonce
    b[0] = 0x01
    nwk = bytearray(16)
    cipher.encrypt(b, nwk)
    b[0] = 0x02
    app = bytearray(16)
    cipher.encrypt(b, app)
    return bytes(nwk), bytes(app)
