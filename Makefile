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

# Node.js reference server's packages (optional: only for --server node). Stamped on the
# lockfile, so a second `make test` neither needs the network nor replaces node_modules
# under a running node server.
NODE_STAMP := targets/node/node_modules/.installed

node:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(NODE_STAMP); \
	else echo "npm not found: the Node.js target (--server node) is unavailable; install nodejs + npm"; fi

$(NODE_STAMP): targets/node/package-lock.json targets/node/package.json
	cd targets/node && npm ci --no-audit --no-fund --silent
	touch $(NODE_STAMP)

seed: venv node
	$(VENV)/bin/sioscale campaign campaigns/seed.toml

smoke: venv node
	$(VENV)/bin/sioscale campaign campaigns/smoke.toml

test: venv node
	$(VENV)/bin/python -m tests.parallel
