"""Keyed, format-preserving permutation of a serial-number pool (NIST SP 800-38G FF1 over AES).

A pool never stores its serials. It keeps a cursor ``i`` and the serial for index ``i`` is ``E_K(i)`` where
``E_K`` is FF1 over the format's domain ``alphabet ** length``. FF1 is a bijection on that domain, so serials
are unique by construction, and without the key the order of issue is unpredictable (EU FMD Art. 4).

Shape of FF1 (SP 800-38G, Algorithm 7), for ``n`` numerals in radix ``r``:

* split ``X`` into ``A`` (``u = n // 2`` numerals) and ``B`` (``v = n - u`` numerals);
* ten Feistel rounds: ``y = NUM(PRF(P || Q)[:d])`` with ``Q = T || 0-pad || [i] || [NUM_r(B)]^b``,
  ``c = (NUM_r(A) + y) mod r^m`` (``m`` alternates ``u``/``v``), then ``A, B = B, STR_m(c)``;
* ``PRF`` is AES-CBC-MAC with a zero IV; ``P`` is a 16-byte header fixed by (radix, u, n, len(T)).

Vectorisation (``FF1.encrypt_block``, ``SerialPermutation.serials_array``):

* Between rounds only the *integers* ``NUM_r(A)`` and ``NUM_r(B)`` matter, so the halves are kept as two
  integer vectors for the whole cipher and converted to numerals once at the end. With at most 20 characters
  a half has ≤ 10 numerals; for ``r ≤ 78`` that is ``r^v ≤ 2^63`` and each half fits an unsigned 64-bit lane.
* ``P`` and every byte of ``Q`` except the round number and ``NUM_r(B)`` are the same for all rows, and
  ``[i] || NUM_r(B)`` lies in Q's last block when ``b ≤ 8``. The CBC-MAC state over everything before that
  block is therefore computed once per length, and each round is *one* AES-ECB call over all rows:
  ``R = AES(prefix_state ⊕ last_block_template_i ⊕ NUM_r(B))``. This is exactly the CBC chaining step.
* ``r^v ≤ 2^63`` means ``b ≤ 8``, hence ``d ∈ {8, 12}`` and ``S = R[:d]``: no extra ``CIPH(R ⊕ [j])`` blocks.
  ``y = NUM(S) mod r^m`` is reduced without overflow by Horner's rule over the 64-bit head of ``S`` and then
  over chunks of the next 32-bit word, each chunk narrow enough that ``y · 2^k`` still fits 64 bits.
* Formats outside that envelope (``r^v > 2^63``) use the same batched AES calls but Python integers in
  object arrays for the arithmetic: slower, bit-for-bit identical.

The scalar path (``FF1.encrypt``/``decrypt``) is a literal transcription of the standard, kept deliberately
independent of the vectorised one so the tests can pit the two against each other.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

__all__ = [
    "FF1",
    "GS1_CHARACTER_SET_82",
    "MAX_SERIAL_LENGTH",
    "NUMERIC",
    "UPPER_ALPHANUMERIC",
    "SerialFormat",
    "SerialPermutation",
]

NUMERIC = "0123456789"
UPPER_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# GS1 General Specifications, AI (21) SERIAL: up to 20 characters of "character set 82".
GS1_CHARACTER_SET_82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
MAX_SERIAL_LENGTH = 20

_ROUNDS = 10
# SP 800-38G: radix^minlen >= 1,000,000 (a smaller domain can be enumerated by an attacker).
_MIN_DOMAIN = 1_000_000
_MAX_RADIX = 1 << 16
# Both halves fit a uint64 lane and sums of two values below 2^63 cannot wrap.
_U64_SAFE = 1 << 63
# Rows per internal batch: bounds the working set (~100 bytes/row) whatever count a caller asks for.
_BATCH_ROWS = 1 << 20
# Size of the "k numerals at once" lookup table used to spell integers in the alphabet.
_SPELL_TABLE_MAX = 1 << 16


# --------------------------------------------------------------------------------------------------------------
# FF1
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything FF1 needs for one message length that does not depend on the message."""

    n: int
    u: int
    v: int
    b: int  # bytes of NUM_radix(B) in Q
    d: int  # bytes of S used for y
    mod_u: int  # radix ** u
    mod_v: int  # radix ** v
    p_block: bytes  # the 16-byte header P
    pad: int  # zero bytes between T and the round number in Q
    prefix_state: bytes  # CBC-MAC state after P and the Q blocks that are identical for every row and round
    tails: tuple[bytes, ...]  # per round: the rest of Q (round number set, NUM_radix(B) zeroed)
    fast: bool  # halves fit uint64 lanes (radix ** v <= 2^63)
    base_hi: tuple[int, ...]  # fast path: prefix_state ^ tails[i], as two big-endian 64-bit words
    base_lo: tuple[int, ...]


def _horner_chunk_bits(modulus: int) -> int:
    """Widest chunk k in {32, 16, 8, 4, 2, 1} such that (modulus - 1) * 2^k + (2^k - 1) fits in 64 bits."""
    for k in (32, 16, 8, 4, 2, 1):
        if modulus << k <= 1 << 64:
            return k
    raise ValueError("modulus too large for the uint64 path")  # unreachable while modulus <= 2^63


class FF1:
    """NIST SP 800-38G FF1 over numerals 0..radix-1, AES key of 16/24/32 bytes (we use 32)."""

    def __init__(self, key: bytes, radix: int, tweak: bytes = b"") -> None:
        key = bytes(key)
        if len(key) not in (16, 24, 32):
            raise ValueError(f"FF1 needs an AES key of 16, 24 or 32 bytes, got {len(key)}")
        radix = operator.index(radix)
        if not 2 <= radix <= _MAX_RADIX:
            raise ValueError(f"FF1 radix must be in 2..{_MAX_RADIX}, got {radix}")
        self.radix = radix
        self.tweak = bytes(tweak)
        # ECB here is the raw AES block function CIPH_K of SP 800-38G, applied to independent 16-byte blocks
        # (the CBC-MAC chaining is done explicitly); it never encrypts a multi-block message.
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305
        self._plans: dict[int, _Plan] = {}

    # -- length-dependent constants ----------------------------------------------------------------------------

    def min_length(self) -> int:
        """Smallest message length for which radix^length >= 1,000,000."""
        length = 1
        while self.radix**length < _MIN_DOMAIN:
            length += 1
        return length

    def _plan(self, n: int) -> _Plan:
        plan = self._plans.get(n)
        if plan is None:
            plan = self._plans[n] = self._make_plan(n)
        return plan

    def _make_plan(self, n: int) -> _Plan:
        radix, tweak = self.radix, self.tweak
        if n < 2 or radix**n < _MIN_DOMAIN:
            raise ValueError(
                f"FF1 needs radix^length >= {_MIN_DOMAIN:,} (NIST SP 800-38G): "
                f"for radix {radix} the length must be at least {max(2, self.min_length())}, got {n}"
            )
        u = n // 2
        v = n - u
        mod_u, mod_v = radix**u, radix**v
        # b = ceil(ceil(v * log2(radix)) / 8), computed exactly: ceil(log2(x)) == (x - 1).bit_length().
        b = ((mod_v - 1).bit_length() + 7) // 8
        d = 4 * ((b + 3) // 4) + 4
        t = len(tweak)
        p_block = (
            bytes([1, 2, 1])
            + radix.to_bytes(3, "big")
            + bytes([10, u % 256])
            + n.to_bytes(4, "big")
            + t.to_bytes(4, "big")
        )
        pad = (-t - b - 1) % 16
        head = tweak + bytes(pad)  # the part of Q before [i]; identical for every row and round
        # Blocks before the one holding [i] are constant: fold them into the CBC-MAC state once, here.
        first_var_block = len(head) // 16
        enc = self._cipher.encryptor()
        state = bytes(16)
        for block in _blocks(p_block + head[: 16 * first_var_block]):
            state = enc.update(_xor16(state, block))
        tails = tuple(head[16 * first_var_block :] + bytes([i]) + bytes(b) for i in range(_ROUNDS))
        fast = mod_v <= _U64_SAFE
        base_hi: tuple[int, ...] = ()
        base_lo: tuple[int, ...] = ()
        if fast:
            # b <= 8, so Q's variable part is a single last block and NUM_radix(B) lives in its low 64 bits.
            assert all(len(tail) == 16 for tail in tails)
            bases = [int.from_bytes(_xor16(state, tail), "big") for tail in tails]
            base_hi = tuple(x >> 64 for x in bases)
            base_lo = tuple(x & (2**64 - 1) for x in bases)
        return _Plan(n, u, v, b, d, mod_u, mod_v, p_block, pad, state, tails, fast, base_hi, base_lo)

    # -- scalar path: the standard, step by step ----------------------------------------------------------------

    def encrypt(self, numerals: Sequence[int]) -> list[int]:
        """FF1.Encrypt(K, T, X) on a list of numerals (SP 800-38G Algorithm 7)."""
        return self._scalar(numerals, decrypt=False)

    def decrypt(self, numerals: Sequence[int]) -> list[int]:
        """FF1.Decrypt(K, T, Y) on a list of numerals (SP 800-38G Algorithm 8)."""
        return self._scalar(numerals, decrypt=True)

    def _scalar(self, numerals: Sequence[int], *, decrypt: bool) -> list[int]:
        x = [operator.index(k) for k in numerals]
        if any(not 0 <= k < self.radix for k in x):
            raise ValueError(f"numerals must be in 0..{self.radix - 1}")
        plan = self._plan(len(x))
        radix, u, v = self.radix, plan.u, plan.v
        a, b = _num(x[:u], radix), _num(x[u:], radix)
        enc = self._cipher.encryptor()
        for i in reversed(range(_ROUNDS)) if decrypt else range(_ROUNDS):
            m_mod = plan.mod_u if i % 2 == 0 else plan.mod_v
            if not decrypt:
                y = self._round_value(enc, plan, i, b)
                a, b = b, (a + y) % m_mod
            else:
                y = self._round_value(enc, plan, i, a)
                a, b = (b - y) % m_mod, a
        return _str(a, u, radix) + _str(b, v, radix)

    def _round_value(self, enc: CipherContext, plan: _Plan, i: int, num_half: int) -> int:
        """y = NUM(S) for round i, with S = first d bytes of PRF(P || Q) || CIPH(R ^ [1]) || ... ."""
        q = self.tweak + bytes(plan.pad) + bytes([i]) + num_half.to_bytes(plan.b, "big")
        r = bytes(16)
        for block in _blocks(plan.p_block + q):
            r = enc.update(_xor16(r, block))
        s = r
        for j in range(1, -(-plan.d // 16)):
            s += enc.update(_xor16(r, j.to_bytes(16, "big")))
        return int.from_bytes(s[: plan.d], "big")

    # -- vectorised path ----------------------------------------------------------------------------------------

    def encrypt_block(self, numerals: np.ndarray) -> np.ndarray:
        """Encrypt every row of an (n, length) array of numerals; returns the same shape and dtype."""
        return self._block(numerals, decrypt=False)

    def decrypt_block(self, numerals: np.ndarray) -> np.ndarray:
        """Inverse of ``encrypt_block``."""
        return self._block(numerals, decrypt=True)

    def _block(self, numerals: np.ndarray, *, decrypt: bool) -> np.ndarray:
        x = np.asarray(numerals)
        if x.ndim != 2 or x.dtype.kind not in "ui":
            raise ValueError(f"expected a 2-D integer array of numerals, got shape {x.shape} dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.radix):
            raise ValueError(f"numerals must be in 0..{self.radix - 1}")
        plan = self._plan(x.shape[1])
        dtype = np.uint64 if plan.fast else object
        a = _num_columns(x[:, : plan.u], self.radix, dtype)
        b = _num_columns(x[:, plan.u :], self.radix, dtype)
        a, b = self._rounds(plan, a, b, decrypt=decrypt)
        out = np.empty_like(x)
        _numeral_columns(a, self.radix, out[:, : plan.u])
        _numeral_columns(b, self.radix, out[:, plan.u :])
        return out

    def _rounds(self, plan: _Plan, a: np.ndarray, b: np.ndarray, *, decrypt: bool) -> tuple[np.ndarray, np.ndarray]:
        """Run the ten Feistel rounds on integer halves (NUM_radix(A), NUM_radix(B)) for all rows at once."""
        if a.shape[0] == 0:
            return a.copy(), b.copy()
        if plan.fast:
            return self._rounds_u64(plan, a, b, decrypt=decrypt)
        return self._rounds_object(plan, a, b, decrypt=decrypt)

    def _rounds_u64(self, plan: _Plan, a: np.ndarray, b: np.ndarray, *, decrypt: bool) -> tuple[np.ndarray, np.ndarray]:
        n = a.shape[0]
        a = a.astype(np.uint64, copy=True)
        b = b.astype(np.uint64, copy=True)
        enc = self._cipher.encryptor()
        # Buffers are allocated once per call: a fresh multi-megabyte array per round costs more in page
        # faults than the arithmetic itself.
        block_in = np.empty((n, 2), dtype=">u8")
        block_in_bytes = memoryview(block_in.reshape(-1).view(np.uint8))
        block_out = np.empty(n * 16 + 16, dtype=np.uint8)  # update_into wants len(data) + block_size - 1
        r = block_out[: n * 16].view(">u8").reshape(n, 2)
        y = np.empty(n, dtype=np.uint64)
        tmp = np.empty(n, dtype=np.uint64)
        tmp2 = np.empty(n, dtype=np.uint64)
        for i in reversed(range(_ROUNDS)) if decrypt else range(_ROUNDS):
            m_mod = np.uint64(plan.mod_u if i % 2 == 0 else plan.mod_v)
            # One CBC-MAC step for every row: AES(prefix_state ^ Q_last), NUM_radix(B) in the low b bytes.
            block_in[:, 0] = plan.base_hi[i]
            np.bitwise_xor(a if decrypt else b, np.uint64(plan.base_lo[i]), out=tmp)
            block_in[:, 1] = tmp
            enc.update_into(block_in_bytes, block_out)
            _num_s_mod(r, plan.d, m_mod, y, tmp, tmp2)
            if not decrypt:
                # C = (A + y) mod r^m; both < r^m <= 2^63, so the sum cannot wrap.
                np.add(a, y, out=a)
                _reduce_once(a, m_mod, tmp)
                a, b = b, a
            else:
                # C = (B - y) mod r^m, computed as B + (r^m - y) to stay unsigned.
                np.subtract(m_mod, y, out=y)
                np.add(b, y, out=b)
                _reduce_once(b, m_mod, tmp)
                a, b = b, a
        return a, b

    def _rounds_object(
        self, plan: _Plan, a: np.ndarray, b: np.ndarray, *, decrypt: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exotic formats (radix^v > 2^63): same batched AES, Python integers for the arithmetic."""
        n = a.shape[0]
        a = np.array([int(k) for k in a], dtype=object)
        b = np.array([int(k) for k in b], dtype=object)
        enc = self._cipher.encryptor()
        prefix = np.frombuffer(plan.prefix_state, dtype=np.uint8)
        extra_blocks = [np.frombuffer(j.to_bytes(16, "big"), dtype=np.uint8) for j in range(1, -(-plan.d // 16))]
        for i in reversed(range(_ROUNDS)) if decrypt else range(_ROUNDS):
            m_mod = plan.mod_u if i % 2 == 0 else plan.mod_v
            tail = np.frombuffer(plan.tails[i], dtype=np.uint8)
            q = np.empty((n, tail.size), dtype=np.uint8)
            q[:] = tail
            num = b"".join(int(k).to_bytes(plan.b, "big") for k in (a if decrypt else b))
            q[:, tail.size - plan.b :] = np.frombuffer(num, dtype=np.uint8).reshape(n, plan.b)
            state = np.broadcast_to(prefix, (n, 16))
            for j in range(0, tail.size, 16):  # one ECB call per varying block of Q
                state = _ecb(enc, state ^ q[:, j : j + 16])
            s = np.concatenate([state, *(_ecb(enc, state ^ e) for e in extra_blocks)], axis=1)[:, : plan.d]
            s_bytes = s.tobytes()
            y = np.array(
                [int.from_bytes(s_bytes[k : k + plan.d], "big") for k in range(0, n * plan.d, plan.d)], dtype=object
            )
            if not decrypt:
                a, b = b, (a + y) % m_mod
            else:
                a, b = (b - y) % m_mod, a
        return a, b


def _blocks(data: bytes) -> list[bytes]:
    return [data[k : k + 16] for k in range(0, len(data), 16)]


def _xor16(x: bytes, y: bytes) -> bytes:
    return (int.from_bytes(x, "big") ^ int.from_bytes(y, "big")).to_bytes(16, "big")


def _num(numerals: Sequence[int], radix: int) -> int:
    """NUM_radix(X): numerals most significant first."""
    value = 0
    for k in numerals:
        value = value * radix + k
    return value


def _str(value: int, length: int, radix: int) -> list[int]:
    """STR^length_radix(value)."""
    out = [0] * length
    for pos in range(length - 1, -1, -1):
        value, out[pos] = divmod(value, radix)
    return out


def _ecb(enc: CipherContext, rows: np.ndarray) -> np.ndarray:
    n = rows.shape[0]
    return np.frombuffer(enc.update(np.ascontiguousarray(rows).tobytes()), dtype=np.uint8).reshape(n, 16)


def _reduce_once(x: np.ndarray, modulus: np.uint64, scratch: np.ndarray) -> None:
    """x = x mod modulus for x < 2 * modulus: min(x, x - modulus) in wrapping uint64 arithmetic."""
    np.subtract(x, modulus, out=scratch)
    np.minimum(x, scratch, out=x)


def _mod_into(x: np.ndarray, modulus: np.uint64, scratch: np.ndarray) -> None:
    """x = x mod modulus, in place. numpy divides uint64 by a scalar with libdivide; % does not."""
    np.floor_divide(x, modulus, out=scratch)
    np.multiply(scratch, modulus, out=scratch)
    np.subtract(x, scratch, out=x)


def _num_s_mod(r: np.ndarray, d: int, modulus: np.uint64, y: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray) -> None:
    """y = NUM(S) mod modulus, S = first d bytes (d in {8, 12}) of each AES output row r (n x 2 big-endian u64).

    Horner's rule: y = head mod M, then for each k-bit chunk c of the next 32-bit word y = (y * 2^k + c) mod M,
    with k chosen so y * 2^k + c < 2^64.
    """
    np.copyto(y, r[:, 0])  # big-endian -> native
    _mod_into(y, modulus, tmp)
    if d == 8:
        return
    assert d == 12
    k = _horner_chunk_bits(int(modulus))
    np.copyto(tmp2, r[:, 1])
    np.right_shift(tmp2, np.uint64(32), out=tmp2)  # S[8:12] is the top half of the second word
    mask = np.uint64((1 << k) - 1)
    for shift in range(32 - k, -1, -k):
        np.left_shift(y, np.uint64(k), out=y)
        if k == 32:
            np.bitwise_or(y, tmp2, out=y)
        else:
            np.right_shift(tmp2, np.uint64(shift), out=tmp)
            np.bitwise_and(tmp, mask, out=tmp)
            np.bitwise_or(y, tmp, out=y)
        _mod_into(y, modulus, tmp)


def _num_columns(x: np.ndarray, radix: int, dtype: type) -> np.ndarray:
    """NUM_radix of each row of a numeral matrix, as uint64 (fits by construction) or Python ints."""
    acc = np.zeros(x.shape[0], dtype=dtype)
    for col in range(x.shape[1]):
        column = x[:, col].astype(dtype)
        acc = acc * (np.uint64(radix) if dtype is np.uint64 else radix) + column
    return acc


def _numeral_columns(values: np.ndarray, radix: int, out: np.ndarray) -> None:
    """STR_radix of each value into the columns of out (most significant first)."""
    rest = values.copy()
    r = np.uint64(radix) if rest.dtype == np.uint64 else radix
    for col in range(out.shape[1] - 1, -1, -1):
        # // and % rather than np.divmod, which has no loop for object arrays.
        digit = rest % r
        rest = rest // r
        out[:, col] = digit.astype(np.int64) if digit.dtype == object else digit


# --------------------------------------------------------------------------------------------------------------
# Serial formats and the pool permutation
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SerialFormat:
    """The shape of a pool's serials: ``length`` characters from ``alphabet`` (numeral k is ``alphabet[k]``)."""

    alphabet: str
    length: int
    no_leading_zero: bool = False  # the first character may not be alphabet[0]

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or not 1 <= self.length <= MAX_SERIAL_LENGTH:
            raise ValueError(f"serial length must be 1..{MAX_SERIAL_LENGTH}, got {self.length!r}")
        if len(self.alphabet) < 2:
            raise ValueError("a serial alphabet needs at least 2 characters")
        if len(set(self.alphabet)) != len(self.alphabet):
            duplicates = sorted({c for c in self.alphabet if self.alphabet.count(c) > 1})
            raise ValueError(f"serial alphabet repeats characters: {''.join(duplicates)!r}")
        outside = [c for c in self.alphabet if c not in GS1_CHARACTER_SET_82]
        if outside:
            raise ValueError(
                f"serial alphabet has characters outside GS1 character set 82 (AI 21): {''.join(outside)!r}"
            )

    @property
    def radix(self) -> int:
        return len(self.alphabet)

    @property
    def domain_size(self) -> int:
        """How many distinct serials the format allows."""
        r = self.radix
        if self.no_leading_zero:
            return (r - 1) * r ** (self.length - 1)
        return r**self.length


class SerialPermutation:
    """Bijection index -> serial over SerialFormat's domain.

    randomised=True: FF1 keyed by key/tweak; False: identity (sequential: index i -> i written in the alphabet,
    zero-padded to length). With ``no_leading_zero`` the index space is shifted past the values whose first
    numeral is 0, and in randomised mode FF1 is cycle-walked (re-applied while the first numeral is 0), which
    is still a bijection on the restricted domain.
    """

    def __init__(self, fmt: SerialFormat, key: bytes | None, tweak: bytes = b"", randomised: bool = True) -> None:
        self.format = fmt
        self.randomised = randomised
        radix, length = fmt.radix, fmt.length
        self._ff1: FF1 | None = None
        if randomised:
            if key is None:
                raise ValueError("a randomised serial permutation needs a key")
            self._ff1 = FF1(key, radix, tweak)
            if radix**length < _MIN_DOMAIN:
                raise ValueError(
                    f"randomised serials need alphabet^length >= {_MIN_DOMAIN:,} (NIST SP 800-38G): with "
                    f"{radix} characters the length must be at least {self._ff1.min_length()}, got {length}"
                )
            self._plan: _Plan | None = self._ff1._plan(length)
        else:
            self._plan = None
        self._u = length // 2  # same split as FF1, so both modes share the integer-halves machinery
        self._v = length - self._u
        self._mod_v = radix**self._v
        self._fast = self._mod_v <= _U64_SAFE
        # Values below r^(L-1) have a leading alphabet[0]; no_leading_zero skips them.
        self._offset = radix ** (length - 1) if fmt.no_leading_zero else 0
        # A < radix^(u-1) <=> the first numeral is 0 (randomised formats have length >= 4, so u >= 2).
        self._a_min = radix ** (self._u - 1) if fmt.no_leading_zero and self._u else 0
        self._char_index = {c: k for k, c in enumerate(fmt.alphabet)}
        self._spell_k, self._spell_table = _spell_table(fmt.alphabet)

    def __repr__(self) -> str:
        mode = "randomised" if self.randomised else "sequential"
        return f"SerialPermutation({self.format!r}, {mode})"

    # -- scalar path --------------------------------------------------------------------------------------------

    def serial_at(self, index: int) -> str:
        """The serial for one index (scalar path)."""
        index = self._check_index(index)
        numerals = _str(self._offset + index, self.format.length, self.format.radix)
        if self._ff1 is not None:
            numerals = self._ff1.encrypt(numerals)
            while self.format.no_leading_zero and numerals[0] == 0:
                numerals = self._ff1.encrypt(numerals)
        return "".join(self.format.alphabet[k] for k in numerals)

    def index_of(self, serial: str) -> int:
        """The index whose serial this is; ValueError if the serial cannot belong to this format."""
        numerals = self._parse(serial)
        if self._ff1 is not None:
            numerals = self._ff1.decrypt(numerals)
            while self.format.no_leading_zero and numerals[0] == 0:
                numerals = self._ff1.decrypt(numerals)
        return _num(numerals, self.format.radix) - self._offset

    # -- vectorised path ----------------------------------------------------------------------------------------

    def serials(self, start: int, count: int) -> list[str]:
        """Serials for indices start..start+count-1; equal to [serial_at(i) for i in that range]."""
        array = self.serials_array(start, count)
        return array.astype(f"U{self.format.length}").tolist()

    def serials_array(self, start: int, count: int) -> np.ndarray:
        """Serials for indices start..start+count-1 as a 1-D array of fixed-width ASCII bytes ('S<length>').

        Lets writers stream CSV/JSON (``array.tobytes()``, ``np.savetxt``...) without a Python str per serial.
        """
        start, count = self._check_range(start, count)
        length = self.format.length
        chars = np.empty((count, length), dtype=np.uint8)
        for lo in range(0, count, _BATCH_ROWS):
            hi = min(count, lo + _BATCH_ROWS)
            a, b = self._halves(start + lo, hi - lo)
            if self._ff1 is not None:
                a, b = self._encrypt_halves(a, b)
            self._spell(a, chars[lo:hi, : self._u])
            self._spell(b, chars[lo:hi, self._u :])
        return chars.view(f"S{length}").reshape(count)

    # -- internals ----------------------------------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool):
            raise TypeError("serial index must be an integer, not bool")
        index = operator.index(index)
        if not 0 <= index < self.format.domain_size:
            raise ValueError(f"serial index {index} outside the format's domain [0, {self.format.domain_size})")
        return index

    def _check_range(self, start: int, count: int) -> tuple[int, int]:
        start, count = operator.index(start), operator.index(count)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if start < 0 or start + count > self.format.domain_size:
            raise ValueError(
                f"serial indices [{start}, {start + count}) outside the format's domain [0, {self.format.domain_size})"
            )
        return start, count

    def _parse(self, serial: str) -> list[int]:
        fmt = self.format
        if not isinstance(serial, str):
            raise ValueError(f"serial must be a str, got {type(serial).__name__}")
        if len(serial) != fmt.length:
            raise ValueError(f"serial {serial!r} has {len(serial)} characters; this format needs {fmt.length}")
        numerals = []
        for pos, char in enumerate(serial):
            k = self._char_index.get(char)
            if k is None:
                raise ValueError(
                    f"serial {serial!r} has {char!r} at position {pos + 1}, "
                    f"which is not in the alphabet {fmt.alphabet!r}"
                )
            numerals.append(k)
        if fmt.no_leading_zero and numerals[0] == 0:
            raise ValueError(f"serial {serial!r} starts with {fmt.alphabet[0]!r}, which this format excludes")
        return numerals

    def _halves(self, base_index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(NUM(A), NUM(B)) of the values offset + base_index + j, j < count, without Python ints per row."""
        a0, b0 = divmod(self._offset + base_index, self._mod_v)
        if self._fast:
            b = np.arange(count, dtype=np.uint64)
            b += np.uint64(b0)  # < 2^63 + 2^20: no wrap
            mod_v = np.uint64(self._mod_v)
            if b0 + count > self._mod_v:  # the range crosses into the next A value
                carry = b // mod_v
                b -= carry * mod_v
                a = carry + np.uint64(a0)
            else:
                a = np.full(count, a0, dtype=np.uint64)
            return a, b
        b = np.arange(count, dtype=object) + b0
        a = b // self._mod_v + a0
        b = b % self._mod_v
        return a, b

    def _encrypt_halves(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._ff1 is not None and self._plan is not None
        a, b = self._ff1._rounds(self._plan, a, b, decrypt=False)
        if self.format.no_leading_zero:
            # Cycle-walk only the rows that landed on a leading zero (about 1/radix of them, fewer each pass).
            todo = np.flatnonzero(a < self._a_min)
            while todo.size:
                a2, b2 = self._ff1._rounds(self._plan, a[todo], b[todo], decrypt=False)
                a[todo] = a2
                b[todo] = b2
                todo = todo[a2 < self._a_min]
        return a, b

    def _spell(self, values: np.ndarray, out: np.ndarray) -> None:
        """Write each value as out.shape[1] alphabet characters (zero-padded), k characters per table lookup."""
        width = out.shape[1]
        if width == 0:
            return
        k, table = self._spell_k, self._spell_table
        chunk_mod = self.format.radix**k
        rest = values
        pos = width
        if values.dtype == np.uint64:
            chunk_mod_u = np.uint64(chunk_mod)
            while pos > k:
                rest, digits = np.divmod(rest, chunk_mod_u)
                out[:, pos - k : pos] = np.take(table, digits, axis=0)
                pos -= k
            # rest < radix^pos here: its k-character spelling starts with k - pos zero characters.
            out[:, :pos] = np.take(table, rest, axis=0)[:, k - pos :]
            return
        while pos > k:  # object arrays: np.divmod has no object loop
            rest, digits = rest // chunk_mod, rest % chunk_mod
            out[:, pos - k : pos] = np.take(table, digits.astype(np.int64), axis=0)
            pos -= k
        out[:, :pos] = np.take(table, rest.astype(np.int64), axis=0)[:, k - pos :]


def _spell_table(alphabet: str) -> tuple[int, np.ndarray]:
    """(k, table) with table[x] = the k characters spelling x < radix^k, as ASCII bytes."""
    radix = len(alphabet)
    k = 1
    while radix ** (k + 1) <= _SPELL_TABLE_MAX:
        k += 1
    chars = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    x = np.arange(radix**k)
    table = np.empty((radix**k, k), dtype=np.uint8)
    for col in range(k - 1, -1, -1):
        x, digit = np.divmod(x, radix)
        table[:, col] = chars[digit]
    return k, table
