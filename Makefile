# The two set-up commands of README.md: `make seed` (main job) and `make test` (tests).
# Each makes the virtualenv and installs what it needs first (idempotent).
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: seed smoke test venv node

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Node.js reference server's packages (optional: only for --server node)
node:
	@if command -v npm >/dev/null 2>&1; then cd targets/node && npm ci --no-audit --no-fund --silent; \
	else echo "npm not found: the Node.js target (--server node) is unavailable; install nodejs + npm"; fi

seed: venv node
	$(VENV)/bin/sioscale campaign campaigns/seed.toml

smoke: venv node
	$(VENV)/bin/sioscale campaign campaigns/smoke.toml

test: venv node
	$(VENV)/bin/python -m pytest
