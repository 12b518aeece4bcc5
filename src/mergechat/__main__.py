"""Entry point for ``python -m mergechat``."""

from mergechat.cli import main

raise SystemExit(main())
