"""The globals a pickled ``pytorch_model.bin`` would call when unpickled, found without torch and
without unpickling: inspection outside the engine (doctor, the settings screen, the CLI) uses
this; the engine asks torch itself (`mergechat.core.engine.pickle_check`)."""

from __future__ import annotations

import pickletools
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from mergechat.core.errors import ModelFolderError

#: path -> the globals in it that ``weights_only=True`` would refuse (raises `ModelFolderError`).
PickleCheck = Callable[[Path], tuple[str, ...]]

#: Globals a plain state dict saved by ``torch.save`` references; torch's ``weights_only=True``
#: unpickler allows them. Anything else means the file needs full unpickling (it runs code).
_SAFE_GLOBALS: Final = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.UntypedStorage",
    }
)
_SAFE_GLOBAL_RE: Final = re.compile(r"torch\.(\w+Storage|float\w*|bfloat16|half|u?int\d+|bool)")
_STRING_OPS: Final = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
#: The legacy (pre-zip) format is a few pickles in a row: magic, protocol, sys info, the data.
_LEGACY_PICKLES: Final = 4


def _globals_of(ops: Iterable[tuple[pickletools.OpcodeInfo, object, int | None]]) -> list[str]:
    """``module.name`` of every global one pickle loads, without unpickling it.

    ``STACK_GLOBAL`` takes its names from the stack, so string pushes and the memo are tracked;
    a name that cannot be followed is reported as ``?`` (which no allowlist accepts).
    """
    found: list[str] = []
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    for op, arg, _pos in ops:
        name = op.name
        if name == "GLOBAL":
            # Protocol 2 writes Python 2 names (``__builtin__ exec``).
            found.append(str(arg).replace(" ", ".").replace("__builtin__.", "builtins."))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])[:2]
            found.append(f"{module}.{attr}" if module and attr else "?")
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(str(arg))
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(str(arg))))
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(str(arg))] = pushed[-1] if pushed else None
        else:
            pushed.append(None)
    return found


def unsafe_pickle_globals(path: Path) -> tuple[str, ...]:
    """The globals in ``path`` (a ``torch.save`` file) that ``weights_only=True`` would refuse.

    The pickle is only parsed (`pickletools`), never executed. Raises `ModelFolderError` when
    the file is not a PyTorch checkpoint at all.
    """
    names: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for entry in archive.namelist():
                    if entry.endswith("data.pkl"):
                        names += _globals_of(pickletools.genops(archive.read(entry)))
        else:
            with path.open("rb") as fh:
                for _ in range(_LEGACY_PICKLES):
                    names += _globals_of(pickletools.genops(fh))
    except OSError as exc:
        raise ModelFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFolderError(
            f"not a PyTorch checkpoint: {path} ({exc})",
            hint="the file is damaged or incomplete; download or save it again",
        ) from exc
    unsafe = (n for n in names if n not in _SAFE_GLOBALS and not _SAFE_GLOBAL_RE.fullmatch(n))
    return tuple(dict.fromkeys(unsafe))
