"""Torch's own verdict on a pickled checkpoint, where torch is imported anyway: the globals that
``torch.load(weights_only=True)`` would refuse, by torch's allow-list (user additions included)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

from mergechat.core.model.pickle_scan import unsafe_pickle_globals


def torch_unsafe_globals(path: Path) -> tuple[str, ...]:
    """The globals in ``path`` that torch's ``weights_only`` unpickler refuses, never unpickling.

    Torch lists them for zip checkpoints of pickle protocol 2 or 3 (``torch.save``'s default);
    the legacy format and newer protocols, which it cannot list, go through the static scan.
    """
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        if zipfile.is_zipfile(path):
            return tuple(sorted(get_unsafe_globals_in_checkpoint(path)))
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile):
        pass  # a form torch cannot list, or unreadable: the scan reads it or says what is wrong
    return unsafe_pickle_globals(path)
