"""The host's side of one end-to-end call, shared by inference.Predictor and
kernel_server.KernelServer: the user's input check and the poll of the pinned answer word."""
from __future__ import annotations

import time

import numpy as np

from utils import KitError


def check_image(img, stack=False):
    """A user's input: a C-contiguous uint8 numpy array of (32, 32, 3), or (N, 32, 32, 3) for
    a stack.  Anything else is one KitError line, before any buffer is touched."""
    want = "(N, 32, 32, 3)" if stack else "(32, 32, 3)"
    if not isinstance(img, np.ndarray):
        raise KitError(f"expected a numpy uint8 array of shape {want} (H x W x RGB), got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise KitError(f"expected uint8 pixels 0-255, got dtype {img.dtype} (convert with img.astype(np.uint8))")
    if (img.ndim != 4 or img.shape[1:] != (32, 32, 3)) if stack else img.shape != (32, 32, 3):
        raise KitError(f"expected shape {want} (H x W x RGB, CIFAR-10 size), got {img.shape}")
    if not img.flags.c_contiguous:
        raise KitError("expected a C-contiguous array (np.ascontiguousarray(img) makes one)")
    return img


def poll_answer(word, want, timeout_s, at=0, shift=4, gone_at=None):
    """Spin on the pinned answer word (a numpy view) until it holds call number want; True
    then, False after timeout_s.  The clock is read now and then, not on every poll.  at, shift:
    another word of the same buffer and where its number sits (the gate's ready stamp: 2, 0).
    gone_at: a word that holds want once the kernel has ended without this call (a serving
    kernel's expiry, word 1): None then."""
    clock, deadline, spins = time.perf_counter, None, 0
    while (int(word[at]) >> shift) != want:
        spins += 1
        if spins & 63 == 0 and gone_at is not None and int(word[gone_at]) == want:
            return (int(word[at]) >> shift) == want or None
        if spins & 1023 == 0:
            now = clock()
            deadline = deadline or now + timeout_s
            if now > deadline:
                return False
    return True
