"""Streaming classification: samples in at each modality's native rate, timestamped predictions out.

Each modality has a ring buffer of its most recent samples. Every `hop` seconds of stream time the
classifier takes, for each present modality, the window of its last `window` samples up to that time; it
runs a modality's encoder only when that window has moved since the last run (otherwise it reuses the
embedding), and hands the aggregator only the present modalities. A modality is present when it is
connected (the bridge may say it is not), has a full window of contiguous samples, and its newest
sample is no older than `absent_after_s`. With none present the prediction says so instead of guessing.

A bundle trained with per-user adaptation (session normalisation) is fed windows standardised with the running
per-channel statistics of everything this classifier has streamed, instead of the training statistics.

Time is the caller's clock (host seconds; the bridge maps device clocks onto it), not the wall clock,
so a replay runs faster than real time and gives the same predictions.

Predictions and their times do not depend on how the samples were cut into pushes (one sample at a time or a
minute at once), as long as every stream has been pushed up to the time a poll asks for (as `run` and the
bridge's hub do): a ring grows to keep every sample a prediction not yet polled still needs, up to
`max_backlog_s`; a prediction whose window fell out of that is skipped and counted (`skipped_ticks`), never
made from another window. Per-user adaptation folds samples into the running statistics up to each window's
end when that window is encoded, not when they arrive, so a long push does not leak later samples into
earlier windows' statistics (tests/test_stream.py checks both on random push schedules).

Bad input never stops the stream: a chunk of the wrong shape or for an unknown modality raises
InputError (the caller's bug, said clearly); non-finite samples, chunks that go back in time, and gaps
are dropped or reset and counted in `counters`, and logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from crossl_edge.data.normalize import RunningChannelStats, session_std_floor
from crossl_edge.runtime.model import EdgeModel, InputError
from crossl_edge.spec import ModalitySpec

log = logging.getLogger(__name__)

OK = "ok"
NO_MODALITY = "no_modality"


@dataclass
class Prediction:
    t: float  # stream time the windows end at (seconds)
    state: str  # OK, or NO_MODALITY when no sensor is present
    present: tuple[str, ...]  # modalities the aggregator saw
    encoded: tuple[str, ...]  # encoders that ran for this prediction (the other present ones were reused)
    probs: np.ndarray | None = None  # [K] class probabilities
    label: str | None = None  # the most probable class
    embedding: np.ndarray | None = None  # [G] global embedding (for personalisation)
    compute_s: float = 0.0  # time spent in encoders + aggregator
    base_logits: np.ndarray | None = None  # [K'] the bundle program's own logits (personalisation fits on them)

    def to_dict(self, class_names: tuple[str, ...]) -> dict:
        d = {"t": round(self.t, 4), "state": self.state, "present": list(self.present), "encoded": list(self.encoded),
             "label": self.label, "compute_ms": round(self.compute_s * 1e3, 3)}
        if self.probs is not None:
            d["probs"] = {c: round(float(p), 5) for c, p in zip(class_names, self.probs)}
        return d


class _Channel:
    """Ring buffer of one modality: the newest `capacity` samples of the current contiguous segment.

    Stored channel-major, [C, capacity], so that a window which does not wrap around the ring's end is a slice of
    it, handed to the encoder's input without a copy."""

    def __init__(self, spec: ModalitySpec, capacity: int) -> None:
        self.spec = spec
        self.period = 1.0 / spec.sample_rate
        self.late_after = max(2 * self.period, 0.05)  # how far back a chunk may start before it counts as replayed
        self.buf = np.zeros((spec.channels, capacity), dtype=np.float32)
        self.capacity = capacity
        self.connected = True
        self.segment = 0  # bumped on every reset, so cached embeddings of an old segment are never reused
        self.reset(None)

    def reset(self, t0: float | None) -> None:
        self.t0 = t0  # time of sample 0 of the segment; None: no samples since the last reset
        self.count = 0  # samples in the segment so far
        self.folded = 0  # samples of the segment already in the session statistics (per-user adaptation)
        self.segment += 1

    @property
    def oldest(self) -> int:
        """Index of the oldest sample the ring still holds."""
        return max(0, self.count - self.capacity)

    def grow(self, capacity: int) -> None:
        """Hold `capacity` samples from now on, keeping every sample held (each at its index modulo capacity)."""
        if capacity <= self.capacity:
            return
        idx = np.arange(self.oldest, self.count)
        buf = np.zeros((self.spec.channels, capacity), dtype=np.float32)
        buf[:, idx % capacity] = self.buf[:, idx % self.capacity]
        self.buf, self.capacity = buf, capacity

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as [n, C] (a copy); they must still be held."""
        if start < self.oldest or stop > self.count:
            raise IndexError(f"{self.spec.name}: samples [{start}, {stop}) are not all held ({self.oldest}..{self.count})")
        return self.buf[:, np.arange(start, stop) % self.capacity].T

    @property
    def t_next(self) -> float:
        """Expected time of the next sample (the end of the newest one)."""
        return self.t0 + self.count * self.period

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if n >= self.capacity:  # only the newest `capacity` samples stay, each at its index modulo capacity
            start = (self.count + n) % self.capacity
            tail = x[-self.capacity :].T
            self.buf[:, start:] = tail[:, : self.capacity - start]
            self.buf[:, :start] = tail[:, self.capacity - start :]
        else:
            i = self.count % self.capacity
            first = min(n, self.capacity - i)
            self.buf[:, i : i + first] = x[:first].T
            if first < n:
                self.buf[:, : n - first] = x[first:].T
        self.count += n

    def window_end(self, t: float) -> int:
        """Index one past the newest sample at or before stream time t (clipped to what arrived)."""
        return min(self.count, int(math.floor((t - self.t0) * self.spec.sample_rate + 1e-6)))

    def window(self, end: int, out: np.ndarray) -> np.ndarray:
        """Samples [end - window, end) as [C, T]: a view of the ring (valid until the next append) or, when the
        window wraps past the ring's end to its start, a copy into out."""
        w = self.spec.window
        start = (end - w) % self.capacity
        first = self.capacity - start
        if first >= w:
            return self.buf[:, start : start + w]
        out[:, :first] = self.buf[:, start:]
        out[:, first:] = self.buf[:, : w - first]
        return out


@dataclass
class StreamCounters:
    chunks: int = 0
    samples: int = 0
    nonfinite_dropped: int = 0  # samples with NaN/inf, dropped
    out_of_order_dropped: int = 0  # samples older than the stream already had, dropped
    gaps: int = 0  # resets after a gap longer than max_gap_s (the window refills)
    disconnects: int = 0
    predictions: int = 0
    no_modality: int = 0
    skipped_ticks: int = 0  # prediction times skipped after a jump in stream time
    encoder_runs: Counter = field(default_factory=Counter)
    encoder_reuses: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["encoder_runs"] = dict(self.encoder_runs)
        d["encoder_reuses"] = dict(self.encoder_reuses)
        return d


class StreamingClassifier:
    """Feeds an EdgeModel from live or replayed streams (see the module docstring)."""

    MAX_TICKS_PER_POLL = 1000  # after a long jump in stream time, skip ahead instead of emitting a backlog

    def __init__(
        self, model: EdgeModel, hop_s: float | None = None, absent_after_s: float = 2.0, max_gap_s: float = 0.5,
        history_s: float = 5.0, max_backlog_s: float = 300.0,
    ) -> None:
        m = model.manifest
        self.model = model
        self.hop_s = float(hop_s if hop_s is not None else m.hop_s)
        if not self.hop_s > 0:
            raise ValueError(f"hop must be positive, got {self.hop_s}")
        self.absent_after_s = absent_after_s
        self.max_gap_s = max_gap_s
        self.window_s = m.window_s
        self.channels = {
            s.name: _Channel(s, s.window + int(math.ceil((self.hop_s + history_s) * s.sample_rate)) + 1) for s in m.specs
        }
        # how far a ring may grow to keep the windows of predictions not yet polled (pushes ahead of polls)
        self._max_capacity = {
            s.name: max(self.channels[s.name].capacity, s.window + int(math.ceil(max_backlog_s * s.sample_rate)) + 1)
            for s in m.specs
        }
        self._work = {s.name: np.zeros((s.channels, s.window), dtype=np.float32) for s in m.specs}
        self._cache: dict[str, tuple[tuple[int, int], np.ndarray]] = {}  # name -> ((segment, end), embedding)
        self.next_tick: float | None = None
        self.counters = StreamCounters()
        # Per-user adaptation (a bundle trained on session-normalised windows): every accepted sample updates its
        # modality's running statistics for the whole session, across gaps and reconnects (the same user), and
        # each window is standardised with them when its encoder runs, as in training (session_normalize).
        self.adapt = m.session_std_floor is not None
        self.session_stats = {s.name: RunningChannelStats(s.channels) for s in m.specs} if self.adapt else {}
        self._floor = (
            {s.name: session_std_floor(m.norm_std[s.name], m.session_std_floor) for s in m.specs} if self.adapt else {}
        )

    def describe_normalization(self) -> str:
        """One line for the user: which statistics standardise the windows."""
        if self.adapt:
            return ("per-user adaptation: windows standardised with the running statistics of this session's stream "
                    "(the first minutes are the least certain)")
        return "windows standardised with the training statistics"

    # ---- input -------------------------------------------------------------------------------------
    def push(self, name: str, samples: np.ndarray, t0: float) -> None:
        """Samples [n, C] (or [n] for one channel) of modality `name` at its native rate, the first at time t0."""
        ch = self.channels.get(name)
        if ch is None:
            raise InputError(f"unknown modality {name!r}; the bundle has {', '.join(self.channels)}")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1 and ch.spec.channels == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != ch.spec.channels:
            raise InputError(f"{name}: samples of shape {x.shape}; expected [n, {ch.spec.channels}]")
        if not math.isfinite(t0):
            raise InputError(f"{name}: timestamp {t0} is not finite")
        self.counters.chunks += 1
        self.counters.samples += len(x)
        # one reduction in the common case: only a chunk whose sum is not finite (a NaN or inf in it, or values so
        # large the sum overflowed) is looked at sample by sample
        finite = np.isfinite(x).all(axis=1) if not math.isfinite(np.add.reduce(x, axis=None)) else None
        if finite is not None and not finite.all():
            bad = int((~finite).sum())
            self.counters.nonfinite_dropped += bad
            log.warning("%s: dropped %d non-finite samples", name, bad)
            # the finite runs keep their own times, so the gap logic below sees the hole
            edges = np.flatnonzero(np.diff(np.concatenate([[0], finite.astype(np.int8), [0]])))
            for start, stop in zip(edges[::2], edges[1::2]):
                self._append(ch, x[start:stop], t0 + start * ch.period)
            return
        self._append(ch, x, t0)

    def _append(self, ch: _Channel, x: np.ndarray, t0: float) -> None:
        if len(x) == 0:
            return
        ch.connected = True
        if ch.t0 is None:
            ch.reset(t0)
        else:
            late = ch.t_next - t0
            if late > ch.late_after:  # overlaps what we have: a replayed or reordered chunk
                keep = int(math.floor(late * ch.spec.sample_rate + 1e-6))
                drop = min(len(x), keep)
                self.counters.out_of_order_dropped += drop
                log.warning("%s: dropped %d samples older than the stream (%.3f s back)", ch.spec.name, drop, late)
                x, t0 = x[drop:], t0 + drop * ch.period
                if len(x) == 0:
                    return
            elif -late > max(self.max_gap_s, 2 * ch.period):
                self.counters.gaps += 1
                log.warning("%s: %.3f s gap in the stream; its window refills", ch.spec.name, -late)
                self._fold(ch, ch.count)  # the old segment's samples count for the session all the same
                ch.reset(t0)
            else:  # jitter or a few lost samples: bridged, re-anchored so the newest samples keep their true time
                ch.t0 = t0 - ch.count * ch.period
        if self.next_tick is None:
            self.next_tick = t0 + self.window_s
        self._make_room(ch, x)
        ch.append(x)

    def _make_room(self, ch: _Channel, x: np.ndarray) -> None:
        """Grow the ring so that appending x keeps every sample the next prediction's window (and the ones after
        it) and the session statistics still need; past max_backlog_s, fold what is about to go and let it go."""
        needed = ch.window_end(self.next_tick) - ch.spec.window if self.next_tick is not None else 0
        keep_from = max(0, min(needed, ch.count))
        if self.adapt:
            keep_from = min(keep_from, ch.folded)
        want = ch.count + len(x) - keep_from
        if want <= ch.capacity:
            return
        limit = self._max_capacity[ch.spec.name]
        ch.grow(min(limit, max(want, 2 * ch.capacity)))
        if want > ch.capacity and self.adapt:  # unfolded samples would be overwritten: count them first
            lost = ch.count + len(x) - ch.capacity  # samples with index below this will not be held
            self._fold(ch, min(lost, ch.count))
            if lost > ch.count:
                self.session_stats[ch.spec.name].update(x[ch.folded - ch.count : lost - ch.count])
                ch.folded = lost

    def _fold(self, ch: _Channel, upto: int) -> None:
        """Per-user adaptation: add the segment's samples up to index `upto` to the session statistics."""
        if not self.adapt or upto <= ch.folded:
            return
        self.session_stats[ch.spec.name].update(ch.samples(ch.folded, upto))
        ch.folded = upto

    def set_connected(self, name: str, connected: bool) -> None:
        """What the bridge knows: a disconnected modality is absent at once and its buffer is discarded."""
        ch = self.channels.get(name)
        if ch is None:
            raise InputError(f"unknown modality {name!r}; the bundle has {', '.join(self.channels)}")
        if ch.connected and not connected:
            self.counters.disconnects += 1
            self._fold(ch, ch.count)
            ch.reset(None)
            self._cache.pop(name, None)
        ch.connected = connected

    def restart(self) -> None:
        """A new recording begins (a replay's next file): every modality's buffer and the prediction grid start
        afresh, the grid at the new recording's first sample, so its first full window is predicted whatever the
        hop and however long the pause before it. Nothing is counted as a gap or a disconnect: the caller knows
        the boundary. The session statistics (the same user), what the bridge said of each modality's connection
        and the counters stay."""
        for ch in self.channels.values():
            ch.reset(None)
        self._cache.clear()
        self.next_tick = None

    # ---- output ------------------------------------------------------------------------------------
    def latest_time(self) -> float | None:
        ends = [ch.t_next for ch in self.channels.values() if ch.t0 is not None]
        return max(ends) if ends else None

    def poll(self, now: float | None = None) -> list[Prediction]:
        """Predictions for every prediction time up to `now` (default: the newest sample's time)."""
        now = self.latest_time() if now is None else now
        out: list[Prediction] = []
        if now is None or self.next_tick is None:
            return out
        behind = int((now - self.next_tick) / self.hop_s)
        if behind > self.MAX_TICKS_PER_POLL:
            self.counters.skipped_ticks += behind - self.MAX_TICKS_PER_POLL
            self.next_tick += (behind - self.MAX_TICKS_PER_POLL) * self.hop_s
        while self.next_tick <= now + 1e-9:
            p = self.predict_at(self.next_tick)
            if p is not None:
                out.append(p)
            self.next_tick += self.hop_s
        return out

    def present_at(self, t: float) -> dict[str, int] | None:
        """{modality: window end index} for the modalities present at stream time t; None when a present
        modality's window at t is no longer held (polled more than max_backlog_s behind its pushes)."""
        present = {}
        for name, ch in self.channels.items():
            if not ch.connected or ch.t0 is None or t - ch.t_next > self.absent_after_s:
                continue
            end = ch.window_end(t)
            if end < ch.spec.window:
                continue
            if end - ch.spec.window < ch.oldest:
                return None
            present[name] = end
        return present

    def predict_at(self, t: float) -> Prediction | None:
        """The prediction at stream time t, or None (counted in skipped_ticks) when its windows are gone."""
        t = float(t)
        start = time.perf_counter()
        present = self.present_at(t)
        if present is None:
            self.counters.skipped_ticks += 1
            log.warning("prediction at %.3f s skipped: its windows are no longer held (the pushes ran more than "
                        "max_backlog_s ahead of the polls)", t)
            return None
        self.counters.predictions += 1
        if not present:
            self.counters.no_modality += 1
            return Prediction(t, NO_MODALITY, (), ())
        embeddings, encoded = {}, []
        for name, end in present.items():
            ch = self.channels[name]
            key = (ch.segment, end)
            cached = self._cache.get(name)
            if cached is not None and cached[0] == key:
                embeddings[name] = cached[1]
                self.counters.encoder_reuses[name] += 1
                continue
            if self.adapt:  # the statistics of every sample up to this window's end, as in training
                self._fold(ch, end)
                self.model.set_normalization(name, *self.session_stats[name].mean_std(self._floor[name]))
            z = self.model.encode_checked(name, ch.window(end, self._work[name]))  # finite and shaped by push
            self._cache[name] = (key, z)
            embeddings[name] = z
            encoded.append(name)
            self.counters.encoder_runs[name] += 1
        out = self.model.aggregate(embeddings)
        k = int(out.probs.argmax())
        return Prediction(t, OK, tuple(present), tuple(encoded), out.probs, self.model.class_names[k], out.embedding,
                          time.perf_counter() - start, out.base_logits)
