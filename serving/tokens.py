"""Raw category tokens as served, and Spark's xxhash64 of served values.

Tokens travel in one of two forms (serving/preprocessor.py's RawSpec chooses by the input schema):

- fixed width: when every raw string column declares the same `token_width` of at most TOKEN_BYTES
  bytes (Criteo: 8 hex characters), a batch travels as one uint8 tensor [B, columns, width] that
  clients build and the server reads without a Python object per token (a BYTES tensor cost 13 ms to
  serialize on the client at batch 2048, and as much again to take apart in the server). Zero-padded
  to eight bytes, a token reads as one uint64, the key the preprocess model looks it up by. All-zero
  bytes mean a missing field.
- any length and alphabet: Triton BYTES (object arrays of UTF-8 bytes), empty = missing (ingest reads
  an empty field as null, so bronze holds no empty strings).

The tokens that ingest would reject (of another length than their column's token_width, or outside its
alphabet) are found by `fixed_width_refusals` or `string_refusals`, so the preprocessor refuses them
rather than scoring them as values never seen.

`xxhash64` is Spark's `xxhash64` (XXH64, seed 42, each further argument seeded by the previous hash)
over strings (UTF-8 bytes), 32- and 64-bit integers and doubles, vectorized in numpy: what HashBucket
and Cross compute at serving.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rec_plugin.schema import TOKEN_ALPHABETS

# The widest token the fixed-width path takes: eight bytes read as one uint64 key.
TOKEN_BYTES = 8


# A uint64 of eight bytes that are each 1: eight lookups in a byte table that all said yes; and the
# high bit of each of eight bytes (a byte of a multi-byte UTF-8 character).
_EVERY_BYTE = np.uint64(0x0101010101010101)
_HIGH_BITS = np.uint64(0x8080808080808080)


@functools.cache
def _alphabet_bytes(alphabet: str) -> np.ndarray:
    """uint8 [256]: 1 for an ASCII byte that is a character of `alphabet` (TOKEN_ALPHABETS)."""
    characters = TOKEN_ALPHABETS[alphabet][0]
    return np.array([b < 128 and re.fullmatch(characters, chr(b)) is not None for b in range(256)], np.uint8)


def fixed_width_refusals(
    encoded: np.ndarray, alphabets: Sequence[str | None]
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [B, n, width] zero-padded tokens of n columns whose token_width is `width`, with their
    alphabets (None: any) -> bool [B, n] masks of the tokens ingest rejects: of another length in
    characters (CAT_BAD_LENGTH: shorter, ending in padding, or holding a multi-byte character), and
    with a byte outside their alphabet (a zero inside the width too). Missing (all-zero) tokens are
    neither. Each token is checked as its uint64 key (bench/token_check.py)."""
    width = encoded.shape[-1]
    keys = token_keys(encoded)
    present = keys != 0
    last = (keys >> np.uint64(8 * (width - 1))) & np.uint64(0xFF)
    wrong_length = present & ((last == 0) | (keys & _HIGH_BITS != 0))
    padding = np.uint64(sum(1 << (8 * i) for i in range(width, TOKEN_BYTES)))  # each byte past the width
    outside = np.zeros_like(wrong_length)
    for name in set(alphabets) - {None}:
        chosen = [j for j, a in enumerate(alphabets) if a == name]
        tokens = keys if len(chosen) == len(alphabets) else np.ascontiguousarray(keys[:, chosen])
        looked_up = np.take(_alphabet_bytes(name), tokens.view(np.uint8)).view(np.uint64)
        outside[:, chosen] = (looked_up | padding) != _EVERY_BYTE
    return wrong_length, outside & present & ~wrong_length


def string_refusals(
    values: pa.Array, width: int | None, alphabet: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Arrow strings (null or empty = missing) of a column of token_width `width` and `alphabet`
    (None: any) -> bool masks of the values ingest rejects: of another length (CAT_BAD_LENGTH), and
    (of the right length) with a character outside the alphabet."""
    present = pc.fill_null(pc.greater(pc.binary_length(values), 0), False).to_numpy(zero_copy_only=False)
    wrong_length = np.zeros(len(values), bool)
    if width is not None:
        wrong_length = present & (
            pc.fill_null(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False) != width
        )
    outside = np.zeros(len(values), bool)
    if alphabet is not None:
        inside = pc.fill_null(pc.match_substring_regex(values, f"^{TOKEN_ALPHABETS[alphabet][0]}*$"), True)
        outside = present & ~wrong_length & ~inside.to_numpy(zero_copy_only=False)
    return wrong_length, outside


def token_bytes(tokens: np.ndarray, width: int = TOKEN_BYTES) -> np.ndarray:
    """str or bytes tokens [...] (None, NaN or empty = missing) -> uint8 [..., width]. A token longer
    than `width` bytes, or one that is not ASCII, is refused with a ValueError naming it.

    Arrow converts the Python strings and pads them in C: 1.7 ms for 2048x26 tokens, against 2.7 ms
    for numpy's astype("S9") after pandas' isna."""
    tokens = np.asarray(tokens, dtype=object)
    try:
        text = pa.array(tokens.ravel(), type=pa.string(), from_pandas=True)
    except pa.ArrowInvalid as error:
        raise ValueError(f"category tokens must be ASCII: {error}") from None
    padded = pc.utf8_rpad(pc.fill_null(text, ""), width=width, padding="\x00")
    # Longer tokens keep their length, and a non-ASCII character takes more than one byte.
    too_long = pc.binary_length(padded).to_numpy() != width
    if too_long.any():
        raise ValueError(
            f"category tokens are at most {width} ASCII characters; got "
            f"{tokens.ravel()[too_long][0]!r} and {int(too_long.sum()) - 1} more"
        )
    if len(padded) == 0:
        return np.zeros((*tokens.shape, width), np.uint8)
    _, offsets, data = padded.buffers()
    start = int(np.frombuffer(offsets, np.int32)[padded.offset])
    encoded = np.frombuffer(data, np.uint8, count=len(padded) * width, offset=start)
    return encoded.reshape(*tokens.shape, width)


def token_keys(encoded: np.ndarray) -> np.ndarray:
    """uint8 [..., width <= TOKEN_BYTES] -> uint64 [...]: each token's bytes, zero-padded to eight,
    read as one little-endian integer (0 = missing)."""
    encoded = np.asarray(encoded, dtype=np.uint8)
    width = encoded.shape[-1]
    if width > TOKEN_BYTES:
        raise ValueError(f"token keys take at most {TOKEN_BYTES} bytes a token, got {width}")
    if width < TOKEN_BYTES:
        pad = [(0, 0)] * (encoded.ndim - 1) + [(0, TOKEN_BYTES - width)]
        encoded = np.pad(encoded, pad)
    return np.ascontiguousarray(encoded).view("<u8")[..., 0]


def fixed_width_strings(encoded: np.ndarray) -> pa.Array:
    """uint8 [B, width] zero-padded tokens -> an Arrow string array (all-zero = null)."""
    encoded = np.ascontiguousarray(encoded, dtype=np.uint8)
    width = encoded.shape[1]
    lengths = width - np.argmax(encoded[:, ::-1] != 0, axis=1)
    lengths[~encoded.any(axis=1)] = 0
    data = np.zeros(0, np.uint8) if width == 0 else encoded
    kept = np.arange(width)[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.Array.from_buffers(
        pa.binary(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(data[kept].tobytes())]
    )
    return pc.if_else(pa.array(lengths == 0), pa.scalar(None, pa.string()), values.cast(pa.string()))


def object_strings(tokens: np.ndarray) -> pa.Array:
    """str or bytes tokens [B] (None, NaN or empty = missing) -> an Arrow string array (null = missing).
    Bytes must be UTF-8."""
    tokens = np.asarray(tokens, dtype=object)
    if len(tokens) and any(isinstance(t, bytes) for t in tokens[:1]):
        array = pa.array(tokens, type=pa.binary(), from_pandas=True).cast(pa.string())
    else:
        array = pa.array(tokens, type=pa.string(), from_pandas=True)
    return pc.if_else(pc.equal(pc.binary_length(array), 0), pa.scalar(None, pa.string()), array)


# XXH64's primes, and Spark's seed.
_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
SPARK_SEED = 42


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    return _rotl(acc + lane * _P2, 31) * _P1


def _avalanche(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * _P2
    h = h ^ (h >> np.uint64(29))
    h = h * _P3
    return h ^ (h >> np.uint64(32))


def _xxh64_bytes(array: pa.Array, seeds: np.ndarray) -> np.ndarray:
    """XXH64 of each non-null element's bytes (Spark's hashUnsafeBytes), seeded per element."""
    binary = array.cast(pa.binary()) if array.type != pa.binary() else array
    if len(binary) == 0:
        return np.zeros(0, np.uint64)
    _, offsets_buffer, data_buffer = binary.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[binary.offset : binary.offset + len(binary) + 1]
    starts = offsets[:-1].astype(np.int64)
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
    raw = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    data = np.concatenate([raw[: int(offsets[-1])], np.zeros(40, np.uint8)])

    def word(at: np.ndarray, size: int) -> np.ndarray:
        # Positions past the data belong to rows the caller masks out: read anything in bounds.
        gathered = data[np.minimum(at, len(data) - size)[:, None] + np.arange(size)]
        return np.ascontiguousarray(gathered).view("<u8" if size == 8 else "<u4")[:, 0].astype(np.uint64)

    seeds = seeds.astype(np.uint64)
    stripes = lengths // 32
    h = seeds + _P5
    long = stripes > 0
    if long.any():
        v = [seeds + _P1 + _P2, seeds + _P2, seeds.copy(), seeds - _P1]
        for s in range(int(stripes.max())):
            active = stripes > s
            for lane in range(4):
                value = _round(v[lane], word(starts + 32 * s + 8 * lane, 8))
                v[lane] = np.where(active, value, v[lane])
        merged = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
        for lane in range(4):
            merged = (merged ^ _round(np.zeros_like(merged), v[lane])) * _P1 + _P4
        h = np.where(long, merged, h)
    h = h + lengths.astype(np.uint64)
    position = starts + stripes * 32
    remaining = lengths - stripes * 32
    for k in range(int(remaining.max()) // 8 if len(remaining) else 0):
        active = remaining >= 8 * (k + 1)
        value = _rotl(h ^ _round(np.zeros_like(h), word(position, 8)), 27) * _P1 + _P4
        h = np.where(active, value, h)
        position = np.where(active, position + 8, position)
    remaining = remaining % 8
    active = remaining >= 4
    value = _rotl(h ^ (word(position, 4) * _P1), 23) * _P2 + _P3
    h = np.where(active, value, h)
    position = np.where(active, position + 4, position)
    remaining = np.where(active, remaining - 4, remaining)
    for k in range(3):
        active = remaining > k
        byte = data[np.minimum(position + k, len(data) - 1)].astype(np.uint64)
        value = _rotl(h ^ (byte * _P5), 11) * _P1
        h = np.where(active, value, h)
    return _avalanche(h)


def _xxh64_int(values: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Spark's hashInt: XXH64 of the value's four little-endian bytes."""
    h = seeds.astype(np.uint64) + _P5 + np.uint64(4)
    h = h ^ (values.astype(np.int32).view(np.uint32).astype(np.uint64) * _P1)
    return _avalanche(_rotl(h, 23) * _P2 + _P3)


def _xxh64_long(values: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Spark's hashLong: XXH64 of the value's eight little-endian bytes."""
    h = seeds.astype(np.uint64) + _P5 + np.uint64(8)
    h = h ^ _round(np.zeros_like(h), values.astype(np.int64).view(np.uint64))
    return _avalanche(_rotl(h, 27) * _P1 + _P4)


def xxhash64(array: pa.Array, seeds: np.ndarray | None = None) -> np.ndarray:
    """Spark's xxhash64 of one non-null column (string, int32, int64, float32 or float64) as uint64,
    seeded by `seeds` (default Spark's 42; a multi-argument xxhash64 seeds each argument with the hash
    so far). Nulls hash to their seed, as Spark skips them."""
    seeds = np.full(len(array), SPARK_SEED, np.uint64) if seeds is None else seeds.astype(np.uint64)
    with np.errstate(over="ignore"):
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
            hashed = _xxh64_bytes(array.cast(pa.string()) if pa.types.is_large_string(kind) else array, seeds)
        elif pa.types.is_integer(kind) and kind.bit_width <= 32:
            hashed = _xxh64_int(pc.fill_null(array, 0).to_numpy(), seeds)
        elif pa.types.is_integer(kind):
            hashed = _xxh64_long(pc.fill_null(array, 0).to_numpy(), seeds)
        elif pa.types.is_floating(kind):
            values = pc.fill_null(array, 0).to_numpy()
            values = np.where(values == 0, 0, values).astype(values.dtype)  # -0.0 hashes as 0.0
            canonical = np.where(np.isnan(values), np.nan, values).astype(values.dtype)
            if kind.bit_width == 32:
                hashed = _xxh64_int(canonical.view(np.int32), seeds)
            else:
                hashed = _xxh64_long(canonical.view(np.int64), seeds)
        else:
            raise ValueError(f"xxhash64 of {kind} values is not served")
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return np.where(valid, hashed, seeds)
