"""User settings and where mergechat keeps files: config.toml, recent models, small JSON caches."""
