"""Start the Textual app: a terminal is required, the UI is imported only now."""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
from typing import TYPE_CHECKING

from mergechat.cli.args import generation_overrides
from mergechat.cli.checks import require_terminal
from mergechat.cli.model_path import use_demo
from mergechat.core.errors import MergechatError

if TYPE_CHECKING:
    from mergechat.ui.options import AppOptions

_APP_MODULE = "mergechat.ui.app"


def app_options_from_args(args: argparse.Namespace) -> AppOptions:
    """The app's start-up options; flags not given stay None so the config file decides."""
    from mergechat.ui.options import AppOptions

    return AppOptions(
        model_path=args.path,
        device=args.device,
        dtype=args.dtype,
        generation_overrides=generation_overrides(args),
        trust_remote_code=args.trust_remote_code,
        debug=args.debug,
        no_history=args.no_history,
    )


def run_app(args: argparse.Namespace) -> int:
    """Run the app until the user quits; its exit code (0 when it gives none)."""
    require_terminal()
    if importlib.util.find_spec(_APP_MODULE) is None:
        raise MergechatError(
            "the app is not available yet in this version",
            "use one-shot mode: mergechat PATH --prompt TEXT (or mergechat doctor PATH)",
        )
    use_demo(args)  # before the app takes the screen: its progress lines go to stderr
    # Everything allocated before the first frame lives until exit: collecting on the way is
    # wasted start-up time; the app turns it back on after its first frame (`ui/runtime.py`).
    gc.disable()
    app = importlib.import_module(_APP_MODULE)
    result = app.run_app(app_options_from_args(args))
    return int(result) if isinstance(result, int) else 0  # no code: the app ended normally
