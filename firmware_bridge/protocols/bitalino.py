"""BITalino (r)evolution, sans-IO: command bytes out, frames in, parsed in bulk with numpy.

Facts from the vendor's public API code (BITalinoWorld/revolution-python-api, bitalino.py; cpp-api):
- commands are single bytes: sampling rate `(code << 6) | 0x03` (code 0..3 = 1, 10, 100, 1000 Hz), start
  `(channel_mask << 2) | 0x01` (live) or `| 0x02` (simulated), stop 0x00, version 0x07;
- a frame for n analog channels is ceil((12 + 10n) / 8) bytes for n <= 4, else ceil((52 + 6(n - 4)) / 8);
- its last byte holds the 4-bit sequence number (high nibble, wraps at 15) and a CRC4 (x^4 + x + 1, low
  nibble) over the frame with that nibble zeroed; the byte before holds the digital inputs (bits 7..4)
  and the top of A1; analog channels are packed backwards from there, A1-A4 10-bit, A5-A6 6-bit.

Nothing here touches a port: `BitalinoParser.feed(bytes)` returns the frames it could decode and keeps
the rest for the next call; `flush()` ends a stream. A frame is delivered once the frame after it also
checks out (CRC and the next sequence number), so a stream runs one frame behind. Bad bytes never raise:
after a break the parser finds where the stream continues (a resync; candidates for every offset at once,
in numpy, so garbage costs linear time), counting CRC and sequence errors and skipped bytes, and sequence
numbers count lost frames: exactly for gaps of 1-15 whole frames, as a lower bound beyond. Its output and
counters do not depend on how the stream was cut into reads. A long stretch without a valid frame is
diagnosed (`diagnose`), e.g. a device started with another channel count than the parser expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RATES = {1: 0, 10: 1, 100: 2, 1000: 3}
CMD_STOP = b"\x00"
CMD_VERSION = b"\x07"
ANALOG_BITS = (10, 10, 10, 10, 6, 6)  # A1..A6
#: frames that must check out in a row (CRC and consecutive sequence numbers) before a resync is trusted:
#: a 4-bit CRC passes one random offset in 16, three in a row one in 4,096 (and the sequence check more)
RESYNC_RUN = 3


class ProtocolError(ValueError):
    """A command or configuration the device cannot take (wrong rate, channels); never raised for bad bytes."""


def frame_size(n_channels: int) -> int:
    if not 1 <= n_channels <= 6:
        raise ProtocolError(f"BITalino streams 1 to 6 analog channels, not {n_channels}")
    bits = 12 + 10 * n_channels if n_channels <= 4 else 52 + 6 * (n_channels - 4)
    return math.ceil(bits / 8)


def cmd_sampling_rate(hz: int) -> bytes:
    if hz not in RATES:
        raise ProtocolError(f"BITalino samples at {', '.join(map(str, RATES))} Hz, not {hz}")
    return bytes([(RATES[hz] << 6) | 0x03])


def cmd_start(channels: tuple[int, ...], simulated: bool = False) -> bytes:
    """Start streaming analog channels (0-based A1..A6 = 0..5)."""
    if not channels or len(set(channels)) != len(channels) or not all(0 <= c <= 5 for c in channels):
        raise ProtocolError(f"channels must be distinct indices 0..5 (A1..A6), got {channels}")
    mask = sum(1 << c for c in channels)
    return bytes([(mask << 2) | (0x02 if simulated else 0x01)])


def _crc_step(x: int, byte: int) -> int:
    """The vendor's CRC loop over one byte (MSB first), register kept to its 4 bits."""
    for bit in range(7, -1, -1):
        x = ((x << 1) & 0x0F) ^ (0x03 if x & 0x08 else 0) ^ ((byte >> bit) & 1)
    return x


@lru_cache(maxsize=None)
def _crc_tables(length: int) -> np.ndarray:
    """[length, 256] uint8: the CRC contribution of byte value v at position i of a frame.

    The CRC is linear over GF(2) and starts from 0, so a frame's CRC is the XOR of what each byte contributes
    alone: byte v at position i gives the register after v followed by length - 1 - i zero bytes (the CRC
    nibble of the last byte counts as zero). That turns the bit loop into one table lookup per byte, which
    vectorises over every offset of a buffer at once (the resync search needs exactly that)."""
    single = [_crc_step(0, v) for v in range(256)]
    zero = [_crc_step(x, 0) for x in range(16)]
    out = np.empty((length, 256), dtype=np.uint8)
    for i in range(length):
        col = [single[v & 0xF0] if i == length - 1 else single[v] for v in range(256)]
        for _ in range(length - 1 - i):
            col = [zero[x] for x in col]
        out[i] = col
    return out


def crc4(frames: np.ndarray) -> np.ndarray:
    """CRC4 (x^4 + x + 1) of each frame [N, L] uint8, over every bit with the CRC nibble (low nibble of the
    last byte) taken as zero, MSB first, as the firmware computes it. Vectorised over frames."""
    frames = np.asarray(frames, dtype=np.uint8)
    tables = _crc_tables(frames.shape[1])
    x = tables[0][frames[:, 0]]
    for i in range(1, frames.shape[1]):
        x ^= tables[i][frames[:, i]]
    return x


def _window_checks(buf: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(CRC ok, sequence number) of the frame that would start at every offset of buf (len(buf) - length + 1
    of each): one table lookup per byte position, no per-offset Python."""
    n = len(buf) - length + 1
    if n <= 0:
        return np.zeros(0, bool), np.zeros(0, np.uint8)
    tables = _crc_tables(length)
    x = tables[0][buf[:n]]
    for i in range(1, length):
        x ^= tables[i][buf[i : i + n]]
    last = buf[length - 1 : length - 1 + n]
    return x == (last & 0x0F), last >> 4


def _runs(crc_ok: np.ndarray, seq: np.ndarray, length: int, frames: int) -> np.ndarray:
    """ok[r]: `frames` frames from offset r all pass their CRC and count up by one (mod 16)."""
    n = len(crc_ok) - (frames - 1) * length
    if n <= 0:
        return np.zeros(0, bool)
    ok = crc_ok[:n].copy()
    for k in range(1, frames):
        ok &= crc_ok[k * length : k * length + n]
        ok &= ((seq[k * length : k * length + n] - seq[(k - 1) * length : (k - 1) * length + n]) & 0x0F) == 1
    return ok


def fitting_channels(data: bytes, min_share: float = 0.5) -> list[int]:
    """Channel counts whose frame size the bytes fit: runs of RESYNC_RUN frames that pass their CRC and count
    up start at no fewer than `min_share` of the places a stream of that size would put them. Random bytes
    fit nothing (a run passes by chance about once in a million offsets); 5 and 6 channels share 8-byte
    frames and cannot be told apart."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    out = []
    for length in sorted({frame_size(n) for n in range(1, 7)}):
        crc_ok, seq = _window_checks(buf, length)
        runs = _runs(crc_ok, seq, length, RESYNC_RUN)
        expected = len(runs) / length
        if expected >= 2 and runs.sum() >= min_share * expected:
            out += [n for n in range(1, 7) if frame_size(n) == length]
    return out


def _positions(n_channels: int, length: int) -> list[tuple[int, int]]:
    """(lowest bit, width) of A1..An in the frame read as one little-endian integer (byte i = bits 8i..8i+7).

    Read that way every channel is contiguous: the last byte holds sequence and CRC (bits 8L-1..8L-8), the
    byte before it the digital I1 I2 O1 O2 (bits 8L-9..8L-12), then A1 (10 bits) just below, A2 below A1,
    and so on down to bit 0; A5 and A6 are 6-bit. (The vendor's read() assembles the same bits byte by byte.)"""
    out, top = [], 8 * length - 12
    for c in range(n_channels):
        width = ANALOG_BITS[c]
        out.append((top - width, width))
        top -= width
    return out


def _as_int(frames: np.ndarray) -> np.ndarray:
    value = np.zeros(len(frames), dtype=np.uint64)
    for i in range(frames.shape[1]):
        value |= frames[:, i].astype(np.uint64) << np.uint64(8 * i)
    return value


def decode_frames(frames: np.ndarray, n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seq [N], digital [N, 4], analog [N, n] int16) of frames [N, L] (their CRC is checked elsewhere)."""
    frames = np.asarray(frames, dtype=np.uint8)
    value = _as_int(frames)
    seq = (frames[:, -1] >> 4).astype(np.int64)
    digital = np.stack([(frames[:, -2] >> b) & 1 for b in (7, 6, 5, 4)], axis=1).astype(np.int8)
    analog = np.empty((len(frames), n_channels), dtype=np.int16)
    for c, (low, width) in enumerate(_positions(n_channels, frames.shape[1])):
        analog[:, c] = ((value >> np.uint64(low)) & np.uint64((1 << width) - 1)).astype(np.int16)
    return seq, digital, analog


def encode_frames(seq: np.ndarray, digital: np.ndarray, analog: np.ndarray) -> bytes:
    """Frames as the device sends them (for simulators and tests): seq [N], digital [N, 4], analog [N, n]."""
    analog = np.asarray(analog, dtype=np.int64)
    n, n_channels = analog.shape
    length = frame_size(n_channels)
    value = np.zeros(n, dtype=np.uint64)
    for c, (low, width) in enumerate(_positions(n_channels, length)):
        if analog[:, c].min(initial=0) < 0 or analog[:, c].max(initial=0) >= 1 << width:
            raise ProtocolError(f"A{c + 1} values must fit {width} bits")
        value |= analog[:, c].astype(np.uint64) << np.uint64(low)
    digital = np.asarray(digital, dtype=np.uint64)
    for j in range(4):
        value |= (digital[:, j] & np.uint64(1)) << np.uint64(8 * length - 9 - j)
    value |= (np.asarray(seq, dtype=np.uint64) & np.uint64(0x0F)) << np.uint64(8 * length - 4)
    frames = np.stack([((value >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.uint8) for i in range(length)], axis=1)
    frames[:, -1] |= crc4(frames)
    return frames.tobytes()


@dataclass
class Frames:
    """What one `feed` decoded: seq [N], digital [N, 4], raw ADC values [N, n] (int16), `lost_before` [N]:
    frames lost (by sequence number) just before each decoded one, and `at_least` [N]: True where that count
    is only a lower bound (the break spanned the bytes of 16 frames or more, so whole laps of the 4-bit
    sequence may hide in it)."""

    seq: np.ndarray
    digital: np.ndarray
    analog: np.ndarray
    lost_before: np.ndarray
    at_least: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.at_least is None:
            self.at_least = np.zeros(len(self.seq), bool)

    def __len__(self) -> int:
        return len(self.seq)


@dataclass
class ParserCounters:
    bytes_in: int = 0
    frames: int = 0
    crc_errors: int = 0  # frame positions that failed their CRC where a frame was expected
    sequence_errors: int = 0  # frames that passed their CRC but broke the sequence (a slip or a lost frame)
    resyncs: int = 0
    bytes_skipped: int = 0
    frames_lost: int = 0  # by sequence-number gaps (lower bounds included)
    frames_lost_at_least: int = 0  # the part of frames_lost counted in gaps that may be 16 frames longer or more
    diagnoses: int = 0  # times a long run without valid frames was diagnosed (see BitalinoParser.diagnose)


#: bytes skipped without a valid frame after which the parser says what the stream probably is (diagnose)
DIAGNOSE_BYTES = 4096


class BitalinoParser:
    """Bytes in, decoded frames out; see the module docstring.

    Every decision is taken at a fixed stream position once the bytes it needs are there, and waits for them
    otherwise, so the output and the counters do not depend on how the stream was cut into reads:

    - in sync, the frame at the head is delivered once the frame after it passes its CRC and carries the next
      sequence number; the first one that does not is a break;
    - after a break, the first offset where RESYNC_RUN frames in a row pass (found for all offsets at once,
      numpy over the buffer) is where the stream continues;
    - the good frame just before the break (it continued the sequence, so it is real unless it passed by
      chance) is delivered unless the bytes say otherwise: the run found overlaps it, or the run's first frame
      carries the very next sequence number after it although bytes were added or lost in between;
    - the run's first frame is delivered when it sits a whole number of frames after the break (no bytes were
      added or lost: whole frames went missing, or some were corrupted in place); otherwise it may be a splice
      of a torn frame whose last byte (sequence and CRC) is real and whose CRC matched by chance (1 in 16),
      and it is dropped (its sequence number still counts it).

    So a gap of 1-15 whole frames is counted exactly (the frames on both sides are delivered), and a torn
    stretch costs at most one extra frame, which the sequence numbers count too.
    """

    def __init__(self, n_channels: int, first_seq: int | None = None) -> None:
        """first_seq: the sequence number the stream starts at, when known (a BITalino restarts at 0 with every
        start command), so that frames lost before the first good one are counted too."""
        self.n_channels = n_channels
        self.length = frame_size(n_channels)
        self._buf = bytearray()
        self._base = 0  # stream position of _buf[0]
        self._head = 0  # in sync: position of the next frame; searching: first offset a run may start at
        self._synced = True  # a stream starts at a frame boundary; after a break we must find one again
        self._break = 0  # position of the frame where the last break happened
        self._held: bytes | None = None  # the good frame just before that break, until the stream is found
        self._done = 0  # stream position up to which every byte was delivered or counted as skipped
        self._last_seq: int | None = None if first_seq is None else (first_seq - 1) % 16
        self._next_at_least = False  # the next delivered frame's gap is a lower bound
        self._dry = bytearray()  # the last bytes skipped since a frame was delivered, for diagnose()
        self._dry_count = 0  # bytes skipped since a frame was delivered
        self.diagnosis: str | None = None  # set once per stretch without valid frames (DIAGNOSE_BYTES)
        self.counters = ParserCounters()

    # ---- the stream ----------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> Frames:
        self.counters.bytes_in += len(data)
        self._buf += data
        parts: list[tuple[np.ndarray, bool]] = []  # (frames, whether the first one's gap is a lower bound)
        prev_seq = self._last_seq
        L = self.length
        end = self._base + len(self._buf)
        if end >= self._needs():
            buf = np.frombuffer(bytes(self._buf), dtype=np.uint8)
            crc_ok, seq = _window_checks(buf, L)
            pairs = _runs(crc_ok, seq, L, 2)
            runs = np.flatnonzero(_runs(crc_ok, seq, L, RESYNC_RUN))
            while self._walk(buf, crc_ok, pairs, parts) if self._synced else self._search(buf, seq, pairs, runs, parts):
                pass
            del self._buf[: self._head - self._base]
            self._base = self._head
        return self._decode(parts, prev_seq)

    @property
    def bytes_since_frame(self) -> int:
        """Bytes skipped since the last delivered frame (or the stream's start)."""
        return self._dry_count

    def _needs(self) -> int:
        """The stream position the next decision needs the bytes up to."""
        if self._synced:
            return self._head + 2 * self.length
        return min(self._head, self._break + 1) + RESYNC_RUN * self.length - 1

    def flush(self) -> Frames:
        """End of stream (the transport closed): the frame held back for confirmation is delivered if its CRC
        and sequence number check out; any other leftover bytes are counted as skipped."""
        L = self.length
        end = self._base + len(self._buf)
        parts = []
        prev_seq = self._last_seq
        if self._synced and end - self._head >= L:
            at = self._head - self._base
            frame = np.frombuffer(bytes(self._buf[at : at + L]), dtype=np.uint8).reshape(1, L)
            seq_ok = self._last_seq is None or (int(frame[0, -1] >> 4) - self._last_seq) % 16 == 1
            if crc4(frame)[0] == (frame[0, -1] & 0x0F) and seq_ok:
                parts.append((frame, self._next_at_least))
                self._done = self._head + L
        if self._held is not None:
            # the stream ended before it was found again: nothing after the frame held at the break says
            # whether that frame was whole, so it goes with the leftover bytes (a disconnect counts them as cut)
            self.counters.bytes_skipped += L
            self._held = None
        self._skip_to(end)
        self._buf.clear()
        self._base = self._head = end
        self._synced = True
        return self._decode(parts, prev_seq)

    def diagnose(self) -> str:
        """What a stretch without valid frames probably is, from the last bytes seen: e.g. 'no valid BITalino
        frames for 6 channels in 4.0 KB; the byte pattern fits 3 channels'. Also kept in `diagnosis`."""
        fits = [n for n in fitting_channels(self._dry) if frame_size(n) != self.length]
        what = (f"no valid BITalino frames for {self.n_channels} channel{'s' * (self.n_channels > 1)} in "
                f"{self._dry_count / 1024:.1f} KB; ")
        if fits:
            what += f"the byte pattern fits {' or '.join(map(str, fits))} channel{'s' * (fits[-1] > 1)}"
        else:
            what += "the bytes fit no BITalino frame size (is it a BITalino, at 115200 baud?)"
        self.diagnosis = what
        self.counters.diagnoses += 1
        return what

    # ---- the two states -----------------------------------------------------------------------------------
    def _walk(self, buf: np.ndarray, crc_ok: np.ndarray, pairs: np.ndarray, parts: list) -> bool:
        """In sync: deliver confirmed frames from the head on; True after a break (search next)."""
        L, at = self.length, self._head - self._base
        lattice = pairs[at::L]  # pairs[r]: the frame at r passes and the one after it follows on
        taken, step = 0, 64
        while taken < len(lattice):  # growing slices: the work is what is delivered, not what is buffered
            bad = np.flatnonzero(~lattice[taken : taken + step])
            if len(bad):
                taken += int(bad[0])
                break
            taken, step = min(taken + step, len(lattice)), step * 2
        if taken:
            parts.append((buf[at : at + taken * L].reshape(taken, L), self._next_at_least))
            self._next_at_least = False
            self._delivered(int(buf[at + taken * L - 1] >> 4))
            self._head += taken * L
            self._done = self._head
        if taken == len(lattice):
            return False  # every frame there was confirmed; the next waits for more bytes
        at = self._head - self._base
        head_ok = bool(crc_ok[at])
        self.counters.crc_errors += int(not head_ok or not crc_ok[at + L])
        self.counters.sequence_errors += int(head_ok and bool(crc_ok[at + L]))
        # a head that continues the sequence (it confirmed the frame delivered before it, or it is the first
        # frame a start command announced) is real unless it passed its CRC by chance
        expected = None if self._last_seq is None else (self._last_seq + 1) % 16
        self._held = bytes(buf[at : at + L]) if head_ok and int(buf[at + L - 1] >> 4) == expected else None
        self._break = self._head
        if self._held is not None:
            self._done = self._head + L  # its bytes are settled when the stream is found again
        else:
            self._skip_to(self._head + 1)  # a run starts past it
        self._head += 1
        self._synced = False
        return True

    def _search(self, buf: np.ndarray, seq: np.ndarray, pairs: np.ndarray, runs: np.ndarray, parts: list) -> bool:
        """Searching: find where the stream continues; True once found (back in sync)."""
        L, p = self.length, self._break
        if self._head == p + 1:
            # first the next frame slot: if it passes and the frame after it follows on, no byte was added or
            # lost and whole frames went missing (a gap). It is judged once the bytes of any run that could
            # start before it are there too, so the answer never depends on the read size.
            if self._base + len(buf) < p + RESYNC_RUN * L:
                return False
            if pairs[p + L - self._base]:
                return self._resume(p + L, seq, parts)
        i = int(np.searchsorted(runs, self._head - self._base))
        if i == len(runs):
            # no run starts at any offset that can be judged yet; the last RESYNC_RUN * L - 1 bytes wait
            evaluable = len(buf) - RESYNC_RUN * L + 1
            self._head = max(self._head, self._base + evaluable)
            self._skip_to(self._head)
            return False
        return self._resume(self._base + int(runs[i]), seq, parts)

    def _resume(self, r: int, seq: np.ndarray, parts: list) -> bool:
        """The stream continues with the frame at r: settle the frame held at the break, and back to sync."""
        L, p = self.length, self._break
        # the run's first frame is whole when it sits right after the break (whole frames missing, or a repeat),
        # or a whole number of frames after it with the sequence number that many frames on (frames corrupted
        # in place). Bytes added or lost in between may have torn it: then it is dropped.
        slots, r_seq = (r - p) // L, int(seq[r - self._base])
        whole = r == p + L or ((r - p) % L == 0 and self._last_seq is not None
                               and r_seq == (self._last_seq + 1 + slots) % 16)
        head = r if whole else r + L
        if self._held is not None:
            held_seq = self._held[-1] >> 4
            # past torn bytes, a run whose first frame carries the held frame's own or next sequence number
            # says the held frame may be a splice of the frame the run starts with
            keep = whole or (r >= p + L and r_seq not in (held_seq, (held_seq + 1) % 16))
            if keep:
                parts.append((np.frombuffer(self._held, dtype=np.uint8).reshape(1, L), False))
                self._delivered(held_seq)
                if r == p + L and r_seq == held_seq and self._repeat(r):
                    head = r + L  # bytes the link repeated, not a gap of exactly 15 frames: the copy is dropped
            else:
                self.counters.bytes_skipped += L
            self._held = None
        self.counters.resyncs += 1
        # bytes of 16 frames or more without one valid frame: whole laps of the sequence may be missing
        self._next_at_least = r - (p + L) >= 16 * L
        self._skip_to(head)
        self._head = head
        self._synced = True
        return True

    def _repeat(self, r: int) -> bool:
        """The frame at r (right after the held one, with its sequence number) is made of bytes the link repeated:
        the held frame again, or its tail after the head of the frame that follows (bytes of a frame repeated
        from inside it, a splice whose CRC passed). A real frame 16 on from the held one matches either only by
        coincidence of all its bytes."""
        L, at = self.length, r - self._base
        frame, after, held = bytes(self._buf[at : at + L]), bytes(self._buf[at + L : at + 2 * L]), self._held
        return frame == held or any(frame == after[:k] + held[k:] for k in range(1, L))

    def _skip_to(self, position: int) -> None:
        if position <= self._done:
            return
        n = position - self._done
        self.counters.bytes_skipped += n
        before = self._dry_count
        self._dry_count += n
        at = self._done - self._base
        self._dry += self._buf[max(at, 0) : at + n]
        del self._dry[:-DIAGNOSE_BYTES]
        self._done = position
        if before < DIAGNOSE_BYTES <= self._dry_count and self.diagnosis is None:
            self.diagnose()

    def _delivered(self, last_seq: int) -> None:
        self._last_seq = last_seq
        self._dry_count = 0
        self._dry.clear()
        self.diagnosis = None

    def _decode(self, parts: list[tuple[np.ndarray, bool]], prev_seq: int | None) -> Frames:
        """Frames of what was delivered; prev_seq: the sequence number delivered before them."""
        if not parts:
            return Frames(np.empty(0, np.int64), np.empty((0, 4), np.int8), np.empty((0, self.n_channels), np.int16),
                          np.empty(0, np.int64))
        seq, digital, analog = decode_frames(np.concatenate([p for p, _ in parts]), self.n_channels)
        at_least = np.zeros(len(seq), bool)
        starts = np.cumsum([0] + [len(p) for p, _ in parts[:-1]])
        at_least[starts] = [flag for _, flag in parts]
        prev = np.concatenate([[seq[0] - 1 if prev_seq is None else prev_seq], seq[:-1]])
        lost = (seq - prev - 1) % 16
        self._last_seq = int(seq[-1])
        self.counters.frames += len(seq)
        self.counters.frames_lost += int(lost.sum())
        self.counters.frames_lost_at_least += int(lost[at_least].sum())
        return Frames(seq, digital, analog, lost, at_least)


def emg_mv(adc: np.ndarray, bits: int = 10) -> np.ndarray:
    """EMG in millivolts (VCC 3.3 V, gain 1009)."""
    return ((np.asarray(adc, dtype=np.float32) / 2**bits) - 0.5) * 3.3 / 1009 * 1000


def eda_us(adc: np.ndarray, bits: int = 10) -> np.ndarray:
    """EDA in microsiemens (VCC 3.3 V, 0.132 ratio; BITalino (r)evolution EDA sensor datasheet form)."""
    return (np.asarray(adc, dtype=np.float32) / 2**bits) * 3.3 / 0.132


def acc_g(adc: np.ndarray, cmin: float = 208.0, cmax: float = 312.0) -> np.ndarray:
    """Acceleration in g from a per-unit calibration (cmin, cmax: ADC at -1 g and +1 g)."""
    return 2 * (np.asarray(adc, dtype=np.float32) - cmin) / (cmax - cmin) - 1
