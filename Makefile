# The two commands a new user needs: `make demo` and `make test`. Both set up what they use first.
PYTHON ?= /usr/bin/python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.picluster-setup

.PHONY: demo test setup lint bench clean deb

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check nodeagent controller firmware tests bench scripts
	$(PY) -m ruff format --check nodeagent controller firmware tests bench scripts
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check nodeagent controller firmware tests bench scripts

bench: $(STAMP)
	$(PY) bench/agent_idle.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info

# The .deb files (picluster-agent, picluster-controller, python3-picluster) into build/debs/, checked by lintian.
deb:
	packaging/build-deb.sh
