"""The served token contract (serving/tokens.py): raw category tokens as fixed-width bytes and keys."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from serving.tokens import TOKEN_BYTES, fixed_width_refusals, string_refusals, token_bytes, token_keys


def test_tokens_become_zero_padded_bytes_and_distinct_keys():
    tokens = np.array([["68fd1e64", b"80e26c9b", None], ["", float("nan"), "0a"]], dtype=object)
    encoded = token_bytes(tokens)
    assert encoded.dtype == np.uint8 and encoded.shape == (2, 3, TOKEN_BYTES)
    assert bytes(encoded[0, 0]) == b"68fd1e64" and bytes(encoded[0, 1]) == b"80e26c9b"
    assert bytes(encoded[1, 2]) == b"0a" + bytes(6)
    keys = token_keys(encoded)
    assert keys.shape == (2, 3) and keys.dtype == np.uint64
    assert keys[0, 2] == keys[1, 0] == keys[1, 1] == 0  # missing, in each of its spellings
    assert len({int(k) for k in keys[0, :2]} | {int(keys[1, 2])}) == 3
    # Fortran-ordered input (what pandas' to_numpy gives) encodes the same.
    assert np.array_equal(token_bytes(np.asfortranarray(tokens)), encoded)
    assert token_bytes(np.empty((0, 3), dtype=object)).shape == (0, 3, TOKEN_BYTES)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("123456789", "at most 8 ASCII characters; got '123456789'"),
        ("ünicode", "at most 8 ASCII characters; got 'ünicode'"),
        (b"\xff\xfe", "must be ASCII"),
    ],
)
def test_tokens_that_do_not_fit_are_refused(token, message):
    with pytest.raises(ValueError, match=message):
        token_bytes(np.array([["68fd1e64", token]], dtype=object))


# (token, bytes as a client of its own may send them, ingest's verdict at width 4 and alphabet hex):
# wrong length, outside the alphabet, or neither. Ingest counts characters and tests them with a regex.
AT_WIDTH_4 = [
    (b"0a1f", False, False),
    (b"0a1", True, False),  # shorter: ends in padding
    (b"0A1F", False, True),
    (b"0a\x001", False, True),  # a zero inside the width: no hex digit
    (b"\x00\x00\x001", False, True),  # right-aligned
    ("é1".encode(), True, False),  # 3 bytes, 2 characters
    ("éé".encode(), True, False),  # 4 bytes, 2 characters
    (b"", False, False),  # missing
]


def test_fixed_width_tokens_are_refused_as_ingest_refuses_them_at_any_width():
    sent = np.zeros((len(AT_WIDTH_4), 2, 4), np.uint8)
    for row, (token, _, _) in enumerate(AT_WIDTH_4):
        sent[row, :, : len(token)] = np.frombuffer(token, np.uint8)
    wrong_length, outside = fixed_width_refusals(sent, ["hex", None])
    assert wrong_length[:, 0].tolist() == [length for _, length, _ in AT_WIDTH_4]
    assert outside[:, 0].tolist() == [alphabet for _, _, alphabet in AT_WIDTH_4]
    assert (wrong_length[:, 1] == wrong_length[:, 0]).all() and not outside[:, 1].any()  # any alphabet
    text = pa.array([token.decode() if token else None for token, _, _ in AT_WIDTH_4])
    wrong_length, outside = string_refusals(text, 4, "hex")
    assert wrong_length.tolist() == [length for _, length, _ in AT_WIDTH_4]
    assert outside.tolist() == [alphabet for _, _, alphabet in AT_WIDTH_4]
    # Width 1 and 8: the last byte of the width is the one padding would zero.
    one = token_bytes(np.array([["a", "G", None]], object), 1)
    assert [m.tolist() for m in fixed_width_refusals(one, ["hex"] * 3)] == [
        [[False] * 3],
        [[False, True, False]],
    ]
    eight = token_bytes(np.array([["68fd1e64", "68fd1e6", "68fd1e6g"]], object), 8)
    wrong_length, outside = fixed_width_refusals(eight, ["hex"] * 3)
    assert wrong_length.tolist() == [[False, True, False]] and outside.tolist() == [[False, False, True]]
