"""The served form of raw category tokens: each token's bytes, zero-padded to a fixed width.

Criteo tokens are 8 hex characters (rec_plugin.schema.CATEGORY_HEX_LENGTH), so a batch of raw
categorical fields travels as one uint8 tensor [B, 26, 8] that clients build and the server reads
without a Python object per token (a BYTES tensor cost 13 ms to serialize on the client at batch 2048,
and as much again to take apart in the server). Eight bytes also read as one uint64, the key the
preprocess model looks each token up by. All-zero bytes mean a missing field.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rec_plugin.schema import CATEGORY_HEX_LENGTH

TOKEN_BYTES = CATEGORY_HEX_LENGTH


def token_bytes(tokens: np.ndarray) -> np.ndarray:
    """str or bytes tokens [...] (None, NaN or empty = missing) -> uint8 [..., TOKEN_BYTES]. A token longer
    than TOKEN_BYTES bytes, or one that is not ASCII, is refused with a ValueError naming it."""
    tokens = np.asarray(tokens, dtype=object)
    tokens = np.where(pd.isna(tokens), "", tokens)
    try:
        wide = tokens.astype(f"S{TOKEN_BYTES + 1}", order="C")
    except UnicodeEncodeError as error:
        raise ValueError(f"category tokens must be ASCII: {error.object!r}") from None
    padded = wide.view(np.uint8).reshape(*tokens.shape, TOKEN_BYTES + 1)
    too_long = padded[..., TOKEN_BYTES] != 0
    if too_long.any():
        raise ValueError(
            f"category tokens are at most {TOKEN_BYTES} bytes; got {tokens[too_long][0]!r} "
            f"and {int(too_long.sum()) - 1} more"
        )
    return np.ascontiguousarray(padded[..., :TOKEN_BYTES])


def token_keys(encoded: np.ndarray) -> np.ndarray:
    """uint8 [..., TOKEN_BYTES] -> uint64 [...]: each token's bytes read as one little-endian integer
    (0 = missing)."""
    return np.ascontiguousarray(encoded, dtype=np.uint8).view("<u8")[..., 0]
