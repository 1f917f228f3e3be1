# Every target creates and uses the virtualenv in .venv; nothing is installed globally
# except Debian's Chromium for the browser tests (see `browser-deps`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: install demo test lint typecheck audit bench browser-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/papersift demo

test: install browser-deps lint typecheck audit
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: install
	$(BIN)/mypy

# Known vulnerabilities in the installed dependencies (pip-audit); a visible note, not a
# failure, where the vulnerability service cannot be reached.
audit: install
	$(BIN)/python tools/audit.py

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/embed.py
	$(BIN)/python bench/demo.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/digest.py

# Headless Chromium for the end-to-end tests: Debian's build (Playwright's own download
# cannot work offline). Installed only when missing and when we may install packages.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "note: /usr/bin/chromium missing; browser tests will be skipped"; fi; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
