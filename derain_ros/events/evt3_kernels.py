"""The decoding loops of ``evt3`` (numba): a scalar per-word state machine, and a block
decoder for long packets that finds the events of 64 words at a time with bit masks.

Why two: the scalar loop pays a mispredicted branch for almost every event, because
whether one or two time words come between events is the sensor's whim (a branch-free
loop was slower still: ~60 instructions per word). The block decoder first builds, with
vectorised loops, bit masks of where the ADDR_X, ADDR_Y, TIME_LOW and TIME_HIGH words
of a block lie; each event then finds its row and time with a leading-zero count on the
masks below it, so the per-word work is a few vector instructions and the per-event
work a handful of scalar ones. Blocks holding anything else (vectors, triggers,
VECT_BASE_X, unknown codes) or a time-high wrap go through the scalar loop, which is
the definition; tests check that both give identical events, counts and state.
See :mod:`derain_ros.events.evt3` for the format and the time rule.
"""

from __future__ import annotations

import numpy as np

from derain_ros.events._jit import KInt, leading_zeros, njit, trailing_zeros

# state slots of the decoder (int64 array, carried across packets)
_S_HIGH, _S_LOW, _S_Y, _S_BASE_X, _S_POL, _S_VALID = range(6)
#: a TIME_HIGH this far below the previous one (or less) is jitter, not a wrap
_WRAP_MIN_DISTANCE = 10
_WRAP_US = 1 << 24
#: TIME_LOW and TIME_HIGH (bit masks of word codes)
_TIME_CODES = (1 << 6) | (1 << 8)
#: CONTINUED_4, padding, OTHERS, CONTINUED_12: carry no events, skipped
_SKIPPED_CODES = (1 << 7) | (1 << 9) | (1 << 14) | (1 << 15)


@njit
def _is_wrap(v: KInt, last: KInt) -> bool | np.bool_:
    """The wrap rule: a TIME_HIGH ``v`` more than 10 below the previous one ``last``
    (bitwise, not short-circuit, so loops can use it without a branch)."""
    return (v < last) & (last - v > _WRAP_MIN_DISTANCE)


@njit
def _update_high(v: KInt, high: KInt) -> KInt:
    if _is_wrap(v, (high >> 12) & 0xFFF):
        high += _WRAP_US
    return (high & ~0xFFFFFF) | (v << 12)


@njit
def _evt3_sync(words: np.ndarray, valid: KInt, high: KInt, low: KInt
               ) -> tuple[KInt, KInt, KInt, KInt]:
    """Where decoding may start: 0 once the stream has a valid time, else the word after
    the first TIME_LOW that follows a TIME_HIGH in this packet (``len(words)`` if none).
    Returns ``(index, high, low, valid)`` with the time words seen on the way."""
    n = words.shape[0]
    i = 0
    if valid == 0:
        has_high = False
        while i < n:
            w = np.int64(words[np.uint64(i)])
            c = w >> 12
            i += 1
            if c == 6:
                low = w & 0xFFF
                if has_high:
                    valid = 1
                    break
            elif c == 8:
                high = _update_high(w & 0xFFF, high)
                has_high = True
    return i, high, low, valid


@njit
def _store_counts(counts: np.ndarray, k: KInt, m: KInt, oob: KInt, unknown: KInt, back: KInt,
                  last: KInt) -> None:
    """A kernel's results into ``counts`` (slots as in :mod:`derain_ros.events.base`)."""
    counts[0] = k
    counts[1] = m
    counts[2] = oob
    counts[4] = unknown
    counts[5] = back
    counts[7] = last


@njit
def _evt3_count(words: np.ndarray) -> tuple[KInt, KInt]:
    """Upper bounds of the events and triggers in ``words``: one pass, vectorised."""
    single = 0
    v12 = 0
    v8 = 0
    trig = 0
    for i in range(words.shape[0]):
        c = words[i] >> 12
        single += c == 2
        v12 += c == 4
        v8 += c == 5
        trig += c == 10
    return single + 12 * v12 + 8 * v8, trig


@njit
def _evt3_kernel(words: np.ndarray, state: np.ndarray, width: KInt, height: KInt, t: np.ndarray,
                 x: np.ndarray, y: np.ndarray, p: np.ndarray, tt: np.ndarray, te: np.ndarray,
                 ti: np.ndarray, counts: np.ndarray) -> None:
    n = words.shape[0]
    cap = t.shape[0]
    high = state[_S_HIGH]
    low = state[_S_LOW]
    ey = state[_S_Y]
    base_x = state[_S_BASE_X]
    pol = state[_S_POL]
    i, high, low, valid = _evt3_sync(words, state[_S_VALID], high, low)
    k = 0
    m = 0
    oob = 0
    unknown = 0
    back = 0
    last = counts[7]  # time of the last event emitted (for the "backwards" count)
    counts[:7] = 0
    now = (high | low) * 1000
    wraps = high >> 24
    hi = (high >> 12) & 0xFFF
    row_ok = ey < height
    # Branches in order of frequency in real recordings: ADDR_X (an event), then the
    # time words, then ADDR_Y. TIME_HIGH and TIME_LOW share one branch whose body picks
    # with selects, not branches: after an event comes a HIGH or a LOW at the sensor's
    # whim, and a mispredicted branch per event cost a third of the decoder's time.
    while i < n:
        w = np.int64(words[np.uint64(i)])
        i += 1
        c = w >> 12
        v = w & 0xFFF
        if c == 2:
            ex = v & 0x7FF
            if ex < width and row_ok:
                t[np.uint64(k)] = now
                x[np.uint64(k)] = ex
                y[np.uint64(k)] = ey
                p[np.uint64(k)] = v >> 11
                k += 1
                back += now < last
                last = now
            else:
                oob += 1
        elif (_TIME_CODES >> c) & 1:
            # wraps, the 12 high bits and the low bits are kept apart so that each
            # depends only on its own last value (short dependency chains)
            is_high = c == 8
            wraps += is_high & _is_wrap(v, hi)
            hi = v if is_high else hi
            low = low if is_high else v
            now = ((wraps << 24) | (hi << 12) | low) * 1000
        elif c == 0:
            ey = v & 0x7FF
            row_ok = ey < height
        elif (_SKIPPED_CODES >> c) & 1:
            pass
        elif c == 3:
            base_x = v & 0x7FF
            pol = v >> 11
        elif c == 4 or c == 5:  # noqa: PLR1714 - numba-friendly
            if k + 12 > cap:
                counts[6] = 1  # no room: the capacity bound is wrong (the caller raises)
                return
            nbits = 12 if c == 4 else 8
            for b in range(nbits):
                if (v >> b) & 1:
                    ex = (base_x + b) & 0xFFFF
                    if ex < width and row_ok:
                        t[np.uint64(k)] = now
                        x[np.uint64(k)] = ex
                        y[np.uint64(k)] = ey
                        p[np.uint64(k)] = pol
                        k += 1
                        back += now < last
                        last = now
                    else:
                        oob += 1
            base_x = (base_x + nbits) & 0xFFFF
        elif c == 10:
            tt[np.uint64(m)] = now
            te[np.uint64(m)] = v & 1
            ti[np.uint64(m)] = (v >> 8) & 0xF
            m += 1
        else:
            unknown += 1
    state[_S_HIGH] = (wraps << 24) | (hi << 12)
    state[_S_LOW] = low
    state[_S_Y] = ey
    state[_S_BASE_X] = base_x
    state[_S_POL] = pol
    state[_S_VALID] = valid
    _store_counts(counts, k, m, oob, unknown, back, last)


#: words per block of the block decoder (one bit each in a uint64 mask)
BLOCK = 64
#: packets shorter than this many words go through the scalar loop only
BLOCK_MIN_WORDS = 1024
#: codes the block decoder handles itself: ADDR_Y, ADDR_X, TIME_LOW, TIME_HIGH and the
#: skipped ones; a block with any other code goes through the scalar loop
_OTHER_CODES = 0xFFFF & ~((1 << 0) | (1 << 2) | (1 << 6) | (1 << 8) | _SKIPPED_CODES)
# columns of the per-block table the scan fills
_M_X, _M_Y, _M_LOW, _M_HIGH, _M_OTHER, _M_HRANGE = range(6)
_U1 = np.uint64(1)
_U63 = np.uint64(63)


@njit
def _popcount(m: np.uint64) -> np.int64:
    m = m - ((m >> np.uint64(1)) & np.uint64(0x5555555555555555))
    m = (m & np.uint64(0x3333333333333333)) + ((m >> np.uint64(2)) & np.uint64(0x3333333333333333))
    m = (m + (m >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((m * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit
def _evt3_scan(words: np.ndarray, valid: KInt, table: np.ndarray
               ) -> tuple[KInt, KInt, KInt, KInt]:
    """First pass of the block decoder (reads, never changes, the stream state).

    Fills ``table`` (one row per block of :data:`BLOCK` words from the start index):
    the masks of ADDR_X, ADDR_Y, TIME_LOW and TIME_HIGH words, whether other codes
    occur, and the smallest and largest TIME_HIGH payload (to rule out a wrap cheaply).
    Returns ``(start, blocks, events, triggers)``: where decoding starts (see
    :func:`_evt3_sync`), the number of full blocks, and upper bounds of the events and
    triggers, as :func:`_evt3_count` gives them, to size the output."""
    start = _evt3_sync(words, valid, 0, 0)[0]
    n = words.shape[0]
    blocks = (n - start) // BLOCK
    events: KInt = 0
    triggers: KInt = 0
    for b in range(blocks):
        base = start + b * BLOCK
        mx = np.uint64(0)
        my = np.uint64(0)
        ml = np.uint64(0)
        mh = np.uint64(0)
        other = np.uint64(0)
        hmin: KInt = 0xFFF
        hmax: KInt = 0
        # (kept in the words' own uint16 arithmetic: widening every word to int64 first
        # stops LLVM from vectorising this loop, 6x slower)
        for j in range(BLOCK):
            w = words[np.uint64(base + j)]
            c = w >> 12
            bit = _U1 << np.uint64(j)
            zero = np.uint64(0)
            mx |= bit if c == 2 else zero
            my |= bit if c == 0 else zero
            ml |= bit if c == 6 else zero
            mh |= bit if c == 8 else zero
            other |= np.uint64((_OTHER_CODES >> c) & 1)
            v = np.int64(w & 0xFFF)
            hmin = min(hmin, v if c == 8 else 0xFFF)
            hmax = max(hmax, v if c == 8 else 0)
        table[b, _M_X] = np.int64(mx)
        table[b, _M_Y] = np.int64(my)
        table[b, _M_LOW] = np.int64(ml)
        table[b, _M_HIGH] = np.int64(mh)
        table[b, _M_OTHER] = np.int64(other)
        table[b, _M_HRANGE] = hmin | (hmax << 12)
        if other:
            e, tr = _evt3_count(words[base:base + BLOCK])
            events += e
            triggers += tr
        else:
            events += _popcount(mx)
    e, tr = _evt3_count(words[start + blocks * BLOCK:])
    return start, blocks, events + e, triggers + tr


@njit
def _last_payload(words: np.ndarray, base: KInt, mask: np.uint64) -> np.int64:
    """The 12-bit payload of the last word of ``mask`` (non-zero) in the block."""
    return np.int64(words[np.uint64(base) + _U63 - leading_zeros(mask)]) & 0xFFF


@njit
def _evt3_block_kernel(words: np.ndarray, table: np.ndarray, start: KInt, blocks: KInt,
                       state: np.ndarray, width: KInt, height: KInt, t: np.ndarray,
                       x: np.ndarray, y: np.ndarray, p: np.ndarray, tt: np.ndarray,
                       te: np.ndarray, ti: np.ndarray, counts: np.ndarray) -> None:
    """Second pass of the block decoder: same contract as :func:`_evt3_kernel`."""
    sub = np.zeros(8, np.int64)
    last = counts[7]
    counts[:7] = 0
    _, high, low, valid = _evt3_sync(words, state[_S_VALID], state[_S_HIGH], state[_S_LOW])
    state[_S_HIGH] = high
    state[_S_LOW] = low
    state[_S_VALID] = valid
    k = 0
    m = 0
    oob = 0
    back = 0
    unknown = 0
    for b in range(blocks + 1):  # the full blocks, then the tail
        base = start + b * BLOCK
        high = state[_S_HIGH]
        hi = (high >> 12) & 0xFFF
        simple = b < blocks and table[b, _M_OTHER] == 0
        if simple:
            row = table[b]
            mh = np.uint64(row[_M_HIGH])
            hmin = row[_M_HRANGE] & 0xFFF
            hmax = row[_M_HRANGE] >> 12
            if hmin < max(hmax, hi) - _WRAP_MIN_DISTANCE:
                # the TIME_HIGH payloads step back somewhere: look for a wrap in order
                prev = hi
                hm = mh
                while hm:
                    j = trailing_zeros(hm)
                    hm &= hm - _U1
                    v = np.int64(words[np.uint64(base) + j]) & 0xFFF
                    if _is_wrap(v, prev):
                        simple = False
                        break
                    prev = v
        if not simple:  # the definition, on this block (or the tail)
            end = base + BLOCK if b < blocks else words.shape[0]
            sub[7] = last
            _evt3_kernel(words[base:end], state, width, height, t[k:], x[k:], y[k:], p[k:],
                         tt[m:], te[m:], ti[m:], sub)
            if sub[6]:
                counts[6] = 1
                return
            k += sub[0]
            m += sub[1]
            oob += sub[2]
            unknown += sub[4]
            back += sub[5]
            last = sub[7]
            continue
        wraps = high >> 24
        row = table[b]
        mh = np.uint64(row[_M_HIGH])
        my = np.uint64(row[_M_Y])
        ml = np.uint64(row[_M_LOW])
        ey0 = state[_S_Y]
        low0 = state[_S_LOW]
        ev = np.uint64(row[_M_X])
        while ev:
            e = trailing_zeros(ev)
            ev &= ev - _U1
            below = (_U1 << e) - _U1
            before = my & below
            ey = (_last_payload(words, base, before) & 0x7FF) if before else ey0
            before = ml & below
            lo = _last_payload(words, base, before) if before else low0
            before = mh & below
            h = _last_payload(words, base, before) if before else hi
            v = np.int64(words[np.uint64(base) + e])
            ex = v & 0x7FF
            if ex < width and ey < height:
                now = ((wraps << 24) | (h << 12) | lo) * 1000
                kk = np.uint64(k)
                t[kk] = now
                x[kk] = ex
                y[kk] = ey
                p[kk] = (v >> 11) & 1
                k += 1
                back += now < last
                last = now
            else:
                oob += 1
        if my:
            state[_S_Y] = _last_payload(words, base, my) & 0x7FF
        if ml:
            state[_S_LOW] = _last_payload(words, base, ml)
        if mh:
            state[_S_HIGH] = (wraps << 24) | (_last_payload(words, base, mh) << 12)
    _store_counts(counts, k, m, oob, unknown, back, last)
