"""LoRaWAN 1.0.3 frames and crypto in CPython: the network side, usable as a reference decoder.

Plain functions over bytes and ints, no state, so the gateway's network server and the
tests of the node firmware (as an independent implementation) can both use them.

Conventions:
- `dev_addr` is an int (0x26011234); on air it is 4 bytes little-endian.
- EUIs (`dev_eui`, `join_eui`) are 8 `bytes` in the order people write them (MSB first,
  "70b3d57ed0000001"); on air they are reversed (little-endian).
- `app_nonce` (a.k.a. JoinNonce, 24 bit), `net_id` (24 bit) and `dev_nonce` (16 bit) are
  ints; on air they are little-endian.
- Keys are 16 `bytes`. Frame counters passed to crypto functions are the full 32-bit value.
- A "PHYPayload" (`phy`) is the whole frame as sent over the air: MHDR ... MIC.

References: LoRaWAN 1.0.3 Specification (LoRa Alliance), sections 4 (MAC frame formats),
4.3.3 (FRMPayload encryption), 4.4 (MIC), 6.2 (OTAA join procedure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# MType (bits 7..5 of MHDR).
JOIN_REQUEST = 0
JOIN_ACCEPT = 1
UNCONFIRMED_DATA_UP = 2
UNCONFIRMED_DATA_DOWN = 3
CONFIRMED_DATA_UP = 4
CONFIRMED_DATA_DOWN = 5
REJOIN_REQUEST = 6  # LoRaWAN 1.1 only; a 1.0.3 network rejects it
PROPRIETARY = 7

MTYPE_NAMES = {
    JOIN_REQUEST: "JoinRequest",
    JOIN_ACCEPT: "JoinAccept",
    UNCONFIRMED_DATA_UP: "UnconfirmedDataUp",
    UNCONFIRMED_DATA_DOWN: "UnconfirmedDataDown",
    CONFIRMED_DATA_UP: "ConfirmedDataUp",
    CONFIRMED_DATA_DOWN: "ConfirmedDataDown",
    REJOIN_REQUEST: "RejoinRequest",
    PROPRIETARY: "Proprietary",
}

MAJOR_LORAWAN_R1 = 0

# FCtrl bits.
FCTRL_ADR = 0x80
FCTRL_ADR_ACK_REQ = 0x40  # uplink only
FCTRL_ACK = 0x20
FCTRL_FPENDING = 0x10  # downlink only (ClassB in uplinks)
FCTRL_FOPTS_LEN = 0x0F

JOIN_REQUEST_SIZE = 23  # MHDR 1 + JoinEUI 8 + DevEUI 8 + DevNonce 2 + MIC 4
MIN_DATA_FRAME_SIZE = 12  # MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + MIC 4
MAX_PHY_SIZE = 255

KEY_SIZE = 16
BLOCK = 16


class LoRaWANError(ValueError):
    """A frame that cannot be parsed; `reason` names what is wrong (truncated, bad_mhdr, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- AES primitives -----------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _ecb_encryptor(key: bytes):  # type: ignore[no-untyped-def]
    # ECB keeps no state between blocks, so one encryptor per key can be reused forever; this
    # saves the key schedule on every frame of a known session.
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()


def _check_key(key: bytes) -> bytes:
    if type(key) is not bytes:
        key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-128 key must be 16 bytes, got {len(key)}")
    return key


def aes128_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-128 ECB encryption of whole 16-byte blocks."""
    if len(data) % BLOCK:
        raise ValueError("AES-ECB needs whole 16-byte blocks")
    return _ecb_encryptor(_check_key(key)).update(bytes(data))


def aes128_decrypt(key: bytes, data: bytes) -> bytes:
    """AES-128 ECB decryption of whole 16-byte blocks."""
    if len(data) % BLOCK:
        raise ValueError("AES-ECB needs whole 16-byte blocks")
    decryptor = Cipher(algorithms.AES(_check_key(key)), modes.ECB()).decryptor()
    return decryptor.update(bytes(data)) + decryptor.finalize()


def aes_cmac(key: bytes, msg: bytes) -> bytes:
    """AES-CMAC (RFC 4493) of `msg` under a 16-byte key: 16 bytes; LoRaWAN's MIC is the first 4."""
    mac = cmac.CMAC(algorithms.AES(_check_key(key)))
    mac.update(msg)
    return mac.finalize()


# --- data frames: MIC and FRMPayload -------------------------------------------------------


def _block(first: int, dev_addr: int, fcnt: int, uplink: bool, last: int) -> bytes:
    # B0 (MIC) and Ai (encryption) blocks: first | 0x00000000 | Dir | DevAddr | FCnt32 | 0x00 | last
    return (
        bytes((first, 0, 0, 0, 0, 0 if uplink else 1))
        + (dev_addr & 0xFFFFFFFF).to_bytes(4, "little")
        + (fcnt & 0xFFFFFFFF).to_bytes(4, "little")
        + bytes((0, last))
    )


def data_mic(nwk_s_key: bytes, msg: bytes, dev_addr: int, fcnt: int, uplink: bool) -> bytes:
    """MIC of a data frame: cmac(NwkSKey, B0 | msg)[0:4], `msg` = MHDR ... FRMPayload."""
    return aes_cmac(nwk_s_key, _block(0x49, dev_addr, fcnt, uplink, len(msg)) + bytes(msg))[:4]


def crypt_frm_payload(key: bytes, dev_addr: int, fcnt: int, uplink: bool, data: bytes) -> bytes:
    """Encrypts or decrypts (the same operation) an FRMPayload.

    `key` is the AppSKey for FPort 1..223, the NwkSKey for FPort 0 (MAC commands).
    The keystream is AES(key, A_i) for i = 1, 2, ...; A_i = 0x01 | 0^4 | Dir | DevAddr |
    FCnt32 | 0x00 | i.
    """
    n = len(data)
    if not n:
        return b""
    head = _block(0x01, dev_addr, fcnt, uplink, 0)[:15]
    blocks = b"".join(head + bytes((i,)) for i in range(1, (n + BLOCK - 1) // BLOCK + 1))
    keystream = _ecb_encryptor(_check_key(key)).update(blocks)
    # XOR as big integers: one C-level operation instead of a loop over bytes.
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(keystream[:n], "big")
    return mixed.to_bytes(n, "big")


@dataclass(slots=True)
class DataFrame:
    """A parsed data frame (MType 2..5). `frm_payload` is as on air (still encrypted)."""

    mtype: int
    dev_addr: int
    fctrl: int
    fcnt16: int
    fopts: bytes
    fport: int | None
    frm_payload: bytes
    mic: bytes
    msg: bytes = field(repr=False)  # MHDR .. FRMPayload: the bytes the MIC covers

    @property
    def uplink(self) -> bool:
        return self.mtype in (UNCONFIRMED_DATA_UP, CONFIRMED_DATA_UP)

    @property
    def confirmed(self) -> bool:
        return self.mtype in (CONFIRMED_DATA_UP, CONFIRMED_DATA_DOWN)

    @property
    def adr(self) -> bool:
        return bool(self.fctrl & FCTRL_ADR)

    @property
    def adr_ack_req(self) -> bool:
        return bool(self.fctrl & FCTRL_ADR_ACK_REQ) and self.uplink

    @property
    def ack(self) -> bool:
        return bool(self.fctrl & FCTRL_ACK)

    @property
    def fpending(self) -> bool:
        return bool(self.fctrl & FCTRL_FPENDING) and not self.uplink


def mtype_of(phy: bytes) -> int:
    """MType of a PHYPayload (MHDR bits 7..5). Raises LoRaWANError for an empty frame or a
    major version other than LoRaWAN R1."""
    if not phy:
        raise LoRaWANError("truncated", "empty frame")
    if phy[0] & 0x03 != MAJOR_LORAWAN_R1:
        raise LoRaWANError("bad_mhdr", f"major version {phy[0] & 0x03}")
    return phy[0] >> 5


def parse_data_frame(phy: bytes) -> DataFrame:
    """Splits a data-frame PHYPayload into its fields (no MIC check, no decryption)."""
    phy = bytes(phy)
    mtype = mtype_of(phy)
    if mtype not in (
        UNCONFIRMED_DATA_UP,
        UNCONFIRMED_DATA_DOWN,
        CONFIRMED_DATA_UP,
        CONFIRMED_DATA_DOWN,
    ):
        raise LoRaWANError("bad_mtype", f"{MTYPE_NAMES[mtype]} is not a data frame")
    if len(phy) < MIN_DATA_FRAME_SIZE:
        raise LoRaWANError("truncated", f"data frame of {len(phy)} bytes")
    if len(phy) > MAX_PHY_SIZE:
        raise LoRaWANError("oversized", f"data frame of {len(phy)} bytes")
    fctrl = phy[5]
    fopts_end = 8 + (fctrl & FCTRL_FOPTS_LEN)
    end = len(phy) - 4
    if fopts_end > end:
        raise LoRaWANError("truncated", "FOpts run into the MIC")
    fport = phy[fopts_end] if fopts_end < end else None
    frm = phy[fopts_end + 1 : end] if fport is not None else b""
    if fport == 0 and fctrl & FCTRL_FOPTS_LEN:
        raise LoRaWANError("bad_fopts", "MAC commands in both FOpts and FPort 0")
    return DataFrame(
        mtype=mtype,
        dev_addr=int.from_bytes(phy[1:5], "little"),
        fctrl=fctrl,
        fcnt16=int.from_bytes(phy[6:8], "little"),
        fopts=phy[8:fopts_end],
        fport=fport,
        frm_payload=frm,
        mic=phy[end:],
        msg=phy[:end],
    )


def check_data_mic(frame: DataFrame, nwk_s_key: bytes, fcnt: int) -> bool:
    """True when the frame's MIC is right for this NwkSKey and full 32-bit frame counter."""
    return data_mic(nwk_s_key, frame.msg, frame.dev_addr, fcnt, frame.uplink) == frame.mic


def decrypt_data_payload(frame: DataFrame, nwk_s_key: bytes, app_s_key: bytes, fcnt: int) -> bytes:
    """Plain FRMPayload: FPort 0 is decrypted with the NwkSKey, other ports with the AppSKey."""
    key = nwk_s_key if frame.fport == 0 else app_s_key
    return crypt_frm_payload(key, frame.dev_addr, fcnt, frame.uplink, frame.frm_payload)


def build_data_frame(
    *,
    mtype: int,
    dev_addr: int,
    fcnt: int,
    nwk_s_key: bytes,
    app_s_key: bytes | None = None,
    fport: int | None = None,
    payload: bytes = b"",
    fopts: bytes = b"",
    fctrl_flags: int = 0,
) -> bytes:
    """Builds a data frame (uplink or downlink by `mtype`), encrypting `payload` and adding
    the MIC. `fctrl_flags` is an OR of FCTRL_ADR, FCTRL_ACK, ...; the FOpts length is added.
    """
    if mtype not in (
        UNCONFIRMED_DATA_UP,
        UNCONFIRMED_DATA_DOWN,
        CONFIRMED_DATA_UP,
        CONFIRMED_DATA_DOWN,
    ):
        raise ValueError(f"MType {mtype} is not a data frame")
    if len(fopts) > 15:
        raise ValueError("FOpts hold at most 15 bytes")
    if payload and fport is None:
        raise ValueError("a payload needs an FPort")
    uplink = mtype in (UNCONFIRMED_DATA_UP, CONFIRMED_DATA_UP)
    fctrl = (fctrl_flags & 0xF0) | len(fopts)
    msg = (
        bytes((mtype << 5 | MAJOR_LORAWAN_R1,))
        + (dev_addr & 0xFFFFFFFF).to_bytes(4, "little")
        + bytes((fctrl,))
        + (fcnt & 0xFFFF).to_bytes(2, "little")
        + bytes(fopts)
    )
    if fport is not None:
        key = nwk_s_key if fport == 0 else app_s_key
        if key is None:
            raise ValueError("an application payload needs the AppSKey")
        msg += bytes((fport,)) + crypt_frm_payload(key, dev_addr, fcnt, uplink, payload)
    if len(msg) + 4 > MAX_PHY_SIZE:
        raise ValueError(f"frame of {len(msg) + 4} bytes exceeds {MAX_PHY_SIZE}")
    return msg + data_mic(nwk_s_key, msg, dev_addr, fcnt, uplink)


def reconstruct_fcnt(last: int | None, fcnt16: int) -> int:
    """The 32-bit frame counter a 16-bit on-air value most likely stands for.

    `last` is the highest 32-bit counter accepted in this session (None: nothing yet). The
    result is the smallest value > `last` whose low 16 bits equal `fcnt16`, except that a value
    equal to `last` is returned as is (a retransmission or a replay: the caller decides).
    LoRaWAN 1.0.3 dropped MAX_FCNT_GAP, so any gap is allowed; a frame from before a rollover
    then gets a counter one epoch too high and fails its MIC, which is the protection.
    """
    fcnt16 &= 0xFFFF
    if last is None:
        return fcnt16
    candidate = (last & 0xFFFF0000) | fcnt16
    if candidate < last:
        candidate += 0x10000
    return candidate & 0xFFFFFFFF


# --- join procedure --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A parsed join-request. EUIs MSB first (as printed), `dev_nonce` an int."""

    join_eui: bytes
    dev_eui: bytes
    dev_nonce: int
    mic: bytes
    msg: bytes = field(repr=False)


def parse_join_request(phy: bytes) -> JoinRequest:
    """Splits a join-request PHYPayload (no MIC check)."""
    phy = bytes(phy)
    mtype = mtype_of(phy)
    if mtype != JOIN_REQUEST:
        raise LoRaWANError("bad_mtype", f"{MTYPE_NAMES[mtype]} is not a join-request")
    if len(phy) != JOIN_REQUEST_SIZE:
        raise LoRaWANError(
            "truncated" if len(phy) < JOIN_REQUEST_SIZE else "oversized",
            f"join-request of {len(phy)} bytes, expected {JOIN_REQUEST_SIZE}",
        )
    return JoinRequest(
        join_eui=phy[1:9][::-1],
        dev_eui=phy[9:17][::-1],
        dev_nonce=int.from_bytes(phy[17:19], "little"),
        mic=phy[19:23],
        msg=phy[:19],
    )


def join_mic(app_key: bytes, msg: bytes) -> bytes:
    """MIC of a join-request or join-accept: cmac(AppKey, MHDR | fields)[0:4]."""
    return aes_cmac(app_key, msg)[:4]


def check_join_request_mic(request: JoinRequest, app_key: bytes) -> bool:
    return join_mic(app_key, request.msg) == request.mic


def build_join_request(app_key: bytes, *, join_eui: bytes, dev_eui: bytes, dev_nonce: int) -> bytes:
    """A join-request as a node sends it (for simulated nodes and tests)."""
    msg = (
        bytes((JOIN_REQUEST << 5 | MAJOR_LORAWAN_R1,))
        + bytes(join_eui)[::-1]
        + bytes(dev_eui)[::-1]
        + (dev_nonce & 0xFFFF).to_bytes(2, "little")
    )
    return msg + join_mic(app_key, msg)


@dataclass(frozen=True, slots=True)
class JoinAccept:
    """A decrypted join-accept. `dl_settings` = RX1DROffset << 4 | RX2DataRate."""

    app_nonce: int
    net_id: int
    dev_addr: int
    dl_settings: int
    rx_delay: int
    cf_list: bytes

    @property
    def rx1_dr_offset(self) -> int:
        return (self.dl_settings >> 4) & 0x07

    @property
    def rx2_dr(self) -> int:
        return self.dl_settings & 0x0F


def build_join_accept(
    app_key: bytes,
    *,
    app_nonce: int,
    net_id: int,
    dev_addr: int,
    dl_settings: int = 0,
    rx_delay: int = 1,
    cf_list: bytes = b"",
) -> bytes:
    """The encrypted join-accept PHYPayload the network sends.

    The network "encrypts" with AES *decryption* so that the node, which only has AES
    encryption, can recover it (LoRaWAN 1.0.3, 6.2.5). The MIC is computed on the plain text.
    """
    if len(cf_list) not in (0, 16):
        raise ValueError("CFList is absent or 16 bytes")
    mhdr = bytes((JOIN_ACCEPT << 5 | MAJOR_LORAWAN_R1,))
    body = (
        (app_nonce & 0xFFFFFF).to_bytes(3, "little")
        + (net_id & 0xFFFFFF).to_bytes(3, "little")
        + (dev_addr & 0xFFFFFFFF).to_bytes(4, "little")
        + bytes((dl_settings & 0xFF, rx_delay & 0xFF))
        + bytes(cf_list)
    )
    plain = body + join_mic(app_key, mhdr + body)
    return mhdr + aes128_decrypt(app_key, plain)


def decrypt_join_accept(app_key: bytes, phy: bytes) -> JoinAccept:
    """The node's side: decrypts a join-accept and checks its MIC (LoRaWANError "mic")."""
    phy = bytes(phy)
    if mtype_of(phy) != JOIN_ACCEPT:
        raise LoRaWANError("bad_mtype", "not a join-accept")
    if len(phy) not in (17, 33):
        raise LoRaWANError("truncated", f"join-accept of {len(phy)} bytes")
    plain = aes128_encrypt(app_key, phy[1:])
    body, mic = plain[:-4], plain[-4:]
    if join_mic(app_key, phy[:1] + body) != mic:
        raise LoRaWANError("mic", "join-accept MIC does not match")
    return JoinAccept(
        app_nonce=int.from_bytes(body[0:3], "little"),
        net_id=int.from_bytes(body[3:6], "little"),
        dev_addr=int.from_bytes(body[6:10], "little"),
        dl_settings=body[10],
        rx_delay=body[11],
        cf_list=body[12:],
    )


def derive_session_keys(
    app_key: bytes, *, app_nonce: int, net_id: int, dev_nonce: int
) -> tuple[bytes, bytes]:
    """(NwkSKey, AppSKey) = AES(AppKey, 0x01|0x02 | AppNonce | NetID | DevNonce | pad16)."""
    tail = (
        (app_nonce & 0xFFFFFF).to_bytes(3, "little")
        + (net_id & 0xFFFFFF).to_bytes(3, "little")
        + (dev_nonce & 0xFFFF).to_bytes(2, "little")
        + bytes(7)
    )
    return aes128_encrypt(app_key, b"\x01" + tail), aes128_encrypt(app_key, b"\x02" + tail)


# --- MAC commands (the few the gateway's network server speaks) -----------------------------

CID_LINK_CHECK = 0x02
CID_LINK_ADR = 0x03
CID_DUTY_CYCLE = 0x04
CID_RX_PARAM_SETUP = 0x05
CID_DEV_STATUS = 0x06
CID_NEW_CHANNEL = 0x07
CID_RX_TIMING_SETUP = 0x08
CID_TX_PARAM_SETUP = 0x09
CID_DL_CHANNEL = 0x0A
CID_DEVICE_TIME = 0x0D

# Payload length of each uplink (node -> network) MAC command, CID excluded.
UPLINK_MAC_SIZES = {
    CID_LINK_CHECK: 0,  # LinkCheckReq
    CID_LINK_ADR: 1,  # LinkADRAns: status
    CID_DUTY_CYCLE: 0,  # DutyCycleAns
    CID_RX_PARAM_SETUP: 1,  # RXParamSetupAns
    CID_DEV_STATUS: 2,  # DevStatusAns: battery, margin
    CID_NEW_CHANNEL: 1,  # NewChannelAns
    CID_RX_TIMING_SETUP: 0,  # RXTimingSetupAns
    CID_TX_PARAM_SETUP: 0,  # TxParamSetupAns
    CID_DL_CHANNEL: 1,  # DlChannelAns
    CID_DEVICE_TIME: 0,  # DeviceTimeReq
}


def parse_uplink_mac_commands(data: bytes) -> list[tuple[int, bytes]]:
    """Splits uplink MAC commands (FOpts or a decrypted FPort-0 payload) into (CID, payload).

    Raises LoRaWANError("bad_fopts") for an unknown CID or a command cut short, since the
    rest of the sequence cannot be located after either.
    """
    out = []
    i = 0
    while i < len(data):
        cid = data[i]
        size = UPLINK_MAC_SIZES.get(cid)
        if size is None:
            raise LoRaWANError("bad_fopts", f"unknown uplink MAC command 0x{cid:02x}")
        if i + 1 + size > len(data):
            raise LoRaWANError("bad_fopts", f"MAC command 0x{cid:02x} cut short")
        out.append((cid, bytes(data[i + 1 : i + 1 + size])))
        i += 1 + size
    return out


def link_check_ans(margin_db: int, gw_count: int) -> bytes:
    """LinkCheckAns: demodulation margin (dB above the floor, 0..254) and gateway count."""
    return bytes((CID_LINK_CHECK, max(0, min(254, margin_db)), max(0, min(255, gw_count))))


def link_adr_req(
    *, data_rate: int, tx_power: int, ch_mask: int, ch_mask_cntl: int = 0, nb_trans: int = 1
) -> bytes:
    """LinkADRReq: DataRate_TXPower, ChMask (16 bit), Redundancy (ChMaskCntl, NbTrans)."""
    return bytes(
        (
            CID_LINK_ADR,
            (data_rate & 0x0F) << 4 | (tx_power & 0x0F),
            ch_mask & 0xFF,
            (ch_mask >> 8) & 0xFF,
            (ch_mask_cntl & 0x07) << 4 | (nb_trans & 0x0F),
        )
    )
