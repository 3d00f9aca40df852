"""Label Studio's brush RLE: the bit-packed run-length code of a brush region's RGBA pixels.

Pure numpy. A brush region (``"type": "brushlabels"``, ``"value": {"format": "rle", "rle": [...]}``)
holds the region's pixels as a flat RGBA byte array (row-major, ``height * width * 4`` values)
packed into a bit stream, most significant bit first, written as a list of byte values:

* header: the number of values (32 bits), the word size minus one (5 bits), then four run-length
  field sizes, each minus one (4 bits each);
* then chunks until that many values are out: a flag bit (1: a run of one repeated word,
  0: literal words), 2 bits choosing one of the four field sizes, the chunk length minus one in
  that many bits, then one word (a run) or ``length`` words (literal).

A pixel belongs to the region when its alpha value (the fourth byte) is not zero; Label Studio
writes 255 in all four bytes of a painted pixel and 0 elsewhere, and so does :func:`encode_mask`.
Encoding uses word size 8 and field sizes 3, 4, 8 and 16 bits, as Label Studio's editor does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WORD_BITS = 8
RUN_FIELD_BITS = (3, 4, 8, 16)
HEADER_BITS = 32 + 5 + 4 * 4
MAX_RUN = 1 << RUN_FIELD_BITS[-1]  # the longest chunk one run field can say


class RleError(ValueError):
    """A brush RLE that does not decode to the image it claims to cover."""


def _field_bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The bits (MSB first) of each value written in its width, concatenated, as uint8 0/1."""
    widths = widths.astype(np.int64)
    total = int(widths.sum())
    owner = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    shift = (widths[owner] - 1 - (np.arange(total) - starts[owner])).astype(np.uint64)
    return ((values.astype(np.uint64)[owner] >> shift) & np.uint64(1)).astype(np.uint8)


def encode_values(values: np.ndarray) -> list[int]:
    """The RLE (a list of byte values) of a flat array of 8-bit values; every chunk is a run."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    n = values.size
    if n >= 1 << 32:
        raise ValueError(f"{n} values do not fit the 32-bit count of the RLE header")
    header_values = np.array([n, WORD_BITS - 1, *(b - 1 for b in RUN_FIELD_BITS)], dtype=np.uint64)
    header_widths = np.array([32, 5, 4, 4, 4, 4])
    if n == 0:
        return np.packbits(_field_bits(header_values, header_widths)).tolist()
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [n])))
    run_values = values[starts]
    pieces = (lengths + MAX_RUN - 1) // MAX_RUN  # runs longer than one chunk are split
    chunk_values = np.repeat(run_values, pieces)
    chunk_lengths = np.full(int(pieces.sum()), MAX_RUN, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    chunk_lengths[last] = lengths - (pieces - 1) * MAX_RUN
    size_index = np.searchsorted(np.array([1 << b for b in RUN_FIELD_BITS]), chunk_lengths - 1, side="right")
    run_bits = np.array(RUN_FIELD_BITS)[size_index]
    chunks = len(chunk_lengths)
    fields = np.stack([np.ones(chunks, dtype=np.int64), size_index, chunk_lengths - 1,
                       chunk_values.astype(np.int64)], axis=1).ravel()
    widths = np.stack([np.ones(chunks, dtype=np.int64), np.full(chunks, 2), run_bits,
                       np.full(chunks, WORD_BITS)], axis=1).ravel()
    bits = np.concatenate((_field_bits(header_values, header_widths), _field_bits(fields, widths)))
    return np.packbits(bits).tolist()  # zero bits pad the last byte


def encode_mask(mask: np.ndarray) -> list[int]:
    """The RLE of a 2-D boolean mask as a brush region: RGBA 255 where True, 0 elsewhere."""
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    return encode_values(np.repeat(np.asarray(mask, dtype=bool).ravel(), 4).astype(np.uint8) * 255)


def _bit_string(rle: Sequence[int]) -> str:
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RleError("the RLE is not a list of byte values") from exc
    if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise RleError("the RLE is not a list of byte values")
    return (np.unpackbits(data.astype(np.uint8)) + ord("0")).tobytes().decode("ascii")


def decode_values(rle: Sequence[int], expected: int | None = None) -> np.ndarray:
    """The flat uint8 values an RLE holds; ``expected``: the count it must hold (else RleError)."""
    bits = _bit_string(rle)
    total = len(bits)
    if total < HEADER_BITS:
        raise RleError("the RLE is shorter than its header")
    n = int(bits[:32], 2)
    word = int(bits[32:37], 2) + 1
    sizes = [int(bits[37 + 4 * k: 41 + 4 * k], 2) + 1 for k in range(4)]
    if expected is not None and n != expected:
        raise RleError(f"the RLE holds {n} values, the image needs {expected}")
    out = np.zeros(n, dtype=np.uint32 if word > 8 else np.uint8)
    pos, i = HEADER_BITS, 0
    while i < n:
        if pos + 3 > total:
            raise RleError(f"the RLE ends after {i} of {n} values")
        repeat = bits[pos] == "1"
        size = sizes[int(bits[pos + 1: pos + 3], 2)]
        pos += 3
        if pos + size > total:
            raise RleError(f"the RLE ends after {i} of {n} values")
        j = i + 1 + int(bits[pos: pos + size], 2)
        pos += size
        if j > n:
            raise RleError(f"a run of the RLE goes past its {n} values")
        words = 1 if repeat else j - i
        if pos + words * word > total:
            raise RleError(f"the RLE ends after {i} of {n} values")
        if repeat:
            out[i:j] = int(bits[pos: pos + word], 2)
        else:
            chunk = np.frombuffer(bits[pos: pos + words * word].encode("ascii"), dtype=np.uint8) - ord("0")
            out[i:j] = chunk.reshape(words, word) @ (1 << np.arange(word - 1, -1, -1))
        pos += words * word
        i = j
    if out.dtype != np.uint8:
        if n and out.max() > 255:
            raise RleError("the RLE holds values above 255")
        out = out.astype(np.uint8)
    return out


def decode_mask(rle: Sequence[int], width: int, height: int) -> np.ndarray:
    """The (height, width) boolean mask of a brush region: its pixels with a non-zero alpha."""
    values = decode_values(rle, expected=width * height * 4)
    return values[3::4].reshape(height, width) > 0
