"""The served token contract (serving/tokens.py): raw category tokens as fixed-width bytes and keys."""

from __future__ import annotations

import numpy as np
import pytest

from serving.tokens import TOKEN_BYTES, token_bytes, token_keys


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
