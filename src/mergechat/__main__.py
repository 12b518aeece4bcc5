"""Entry point for ``python -m mergechat``."""

from mergechat.cli.main import main

raise SystemExit(main())
