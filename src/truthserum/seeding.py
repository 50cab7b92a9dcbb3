"""Named, independent random streams derived from one experiment seed.

Each stage draws from its own stream, so adding a draw to one stage never shifts the numbers
of another, and a model's initialisation and data order depend only on (seed, model index):
a model trains identically whichever shard it falls in.
"""

import zlib

import numpy as np


def stream_seed(seed: int, *names: str | int) -> np.random.SeedSequence:
    """Return the seed sequence for the stream named by ``names`` under ``seed``."""
    words = [int(seed)]
    for name in names:
        words.append(zlib.crc32(name.encode()) if isinstance(name, str) else int(name))
    return np.random.SeedSequence(words)


def rng(seed: int, *names: str | int) -> np.random.Generator:
    """A numpy generator for the named stream."""
    return np.random.default_rng(stream_seed(seed, *names))


def int_seed(seed: int, *names: str | int) -> int:
    """A 63-bit integer seed for the named stream (for torch.manual_seed)."""
    return int(stream_seed(seed, *names).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
