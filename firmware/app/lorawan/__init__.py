"""LoRaWAN 1.0.3 class A end-device MAC for EU868, in MicroPython (cryptolib AES).

Modules: crypto (AES-CMAC, MICs, ciphers, keys), region (EU868 plan, time on air), frame
(frame formats), commands (MAC commands), dutycycle (sub-band budget, channel choice),
session (state and its binary layout), store (RTC memory + flash mirror), errors, and
mac (the API below; it re-exports the errors). Nothing runs at import.

    from lorawan.mac import Device, DutyCycleDeferred

    dev = Device(radio, machine.RTC(), "/lorawan.bin",
                 dev_eui="70B3D57ED0000001", join_eui="0000000000000000",
                 app_key="...32 hex...", data_rate=5, adr=True, battery=lambda: 254)
    # ABP instead: Device(radio, rtc, path, dev_addr="26011BDA", nwk_s_key=..., app_s_key=...)
    if not dev.joined and not dev.join(max_tries=3):   # False: no join-accept heard
        ...
    try:
        result = dev.send(2, payload, confirmed=False)
    except DutyCycleDeferred as e:         # nothing was sent; sleep e.wait_ms, then retry
        ...
    # result.fport/.payload: application downlink or None; .acked; .pending; .link_check

Device(radio, rtc, flash_path, *, clock=None, dev_eui=, join_eui=, app_key= | dev_addr=,
nwk_s_key=, app_s_key=, data_rate=5, adr=True, battery=None, mirror_every=16,
rtc_offset=0). Properties: joined, dev_addr, dev_nonce, fcnt_up (next to send),
data_rate, tx_power_dbm, restored_from ("rtc", "flash" or "new"), rx_dropped. Methods:
join(max_tries=3, *, max_wait_ms=30000) -> bool; send(fport, payload, confirmed=False, *,
max_wait_ms=0) -> Result; time_until_send_ms() -> int; link_check(); save().
battery() returns the DevStatusAns byte: 0 external power, 1..254 level, 255 unknown.
Errors (lorawan.errors): LoRaWANError > NotJoined, DevNonceExhausted,
DutyCycleDeferred(.wait_ms), PayloadTooLarge(.max_len), NoChannel(.dr).

Contracts:
- Identifiers and keys are bytes or hex text in display order (MSB first, as a network
  server console prints them); the MAC reverses EUIs and DevAddr for the air.
- radio: transmit(data, freq_hz, sf, bw_khz) blocks until TX done; receive(freq_hz, sf,
  bw_khz, timeout_ms) returns a frame whose preamble started within timeout_ms, or None;
  sleep(). Optional attributes, as the SX127x/SX126x drivers have them: last_snr (dB of
  the last received frame) feeds the DevStatusAns margin (0 without it); tx_power_dbm is
  taken as TXPower 0 and lowered by 2 dB per LinkADRReq TXPower step during each TX.
- rtc: machine.RTC-like, memory() -> bytes and memory(data). The session takes
  session.SIZE bytes at rtc_offset; bytes outside them are preserved.
- clock: wall-clock milliseconds (default time.time_ns() // 1000000). Duty-cycle blocks
  are stored as such absolute times so they hold across deep sleep.
- Persistence: every change goes to RTC memory; the flash mirror at flash_path (written
  via flash_path + ".tmp" and a rename) is written on every join attempt (DevNonce before
  the request goes on air), on every accepted downlink (so FCntDown survives a power cut), on
  save(), and every mirror_every (16) uplinks. Restoring from the mirror (RTC memory lost)
  jumps FCntUp ahead by mirror_every, so no frame counter is ever sent twice.
- Duty cycle: EU868 sub-bands 865-868 1 %, 868.0-868.6 1 %, 868.7-869.2 0.1 %,
  869.4-869.65 10 %, 869.7-870 1 %, plus DutyCycleReq's aggregated limit. join()/send()
  raise DutyCycleDeferred(wait_ms) before touching any state when no channel is free,
  unless the wait is at most their max_wait_ms, which they then sleep (time.sleep_ms).
- Downlinks that are malformed, for another device, replayed or with a wrong MIC are
  ignored and counted in Device.rx_dropped; MAC command parsing stops at an unknown one.

Not implemented: class B/C, DlChannelReq, DeviceTimeReq, NbTrans repetitions (stored
only), LoRaWAN 1.0.3's join back-off beyond the sub-band duty cycle, DR6/DR7.
"""
