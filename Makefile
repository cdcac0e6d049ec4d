# The two commands a new user needs: `make demo` and `make test`. Both set up what they use first.
PYTHON ?= /usr/bin/python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.picluster-setup

.PHONY: demo test setup test-tools test-ha-venv test-llama lint bench clean deb

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check nodeagent controller firmware tests bench scripts
	$(PY) -m ruff format --check nodeagent controller firmware tests bench scripts
	$(MAKE) --no-print-directory -j2 test-tools
	$(PY) -m pytest -q

# What some tests run and Debian 12 does not package: a Home Assistant venv (Python 3.13) and llama.cpp, built
# once into a cache outside the repository (scripts/test-cache.sh) and reused; a missing Python 3.13 stops here,
# with what to install. Side by side (-j2): pip mostly waits on the network while the compiler works.
# tests/integration/test_fresh_machine.py checks that both build from an empty cache.
test-tools: test-ha-venv test-llama

test-ha-venv: $(STAMP)
	scripts/ha-venv.sh >/dev/null

test-llama: $(STAMP)
	PYTHON=$(PYTHON) scripts/build-llama.sh >/dev/null

lint: $(STAMP)
	$(PY) -m ruff check nodeagent controller firmware tests bench scripts

bench: $(STAMP)
	$(PY) bench/agent_idle.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info

# The .deb files (picluster-agent, picluster-controller, python3-picluster) into build/debs/, checked by lintian.
deb:
	packaging/build-deb.sh
