# Shortcuts over tools/bootstrap.py (which needs only Python 3.10+). TORCH_SPEC picks the torch build.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BOOT := MERGECHAT_TORCH="$(TORCH_SPEC)" $(PYTHON) tools/bootstrap.py

.PHONY: install test demo lint bench clean

install:
	$(BOOT) install

test:
	$(BOOT) test

demo:
	$(BOOT) demo

lint: install
	.venv/bin/ruff check src tests bench tools
	.venv/bin/ruff format --check src tests bench tools
	.venv/bin/mypy

bench: install
	HF_HUB_OFFLINE=1 .venv/bin/python bench/run_all.py

clean:
	rm -rf .venv build dist .pytest_cache .mypy_cache .ruff_cache
