# All setup on a fresh machine: `make run` (launch the app) or `make test` (run the tests).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS_STAMP := $(VENV)/.installed-extras

.PHONY: run test test-label-studio lint bench clean

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Optional drivers (PostgreSQL, Redis) for several machines; the multimachine tests use them.
$(EXTRAS_STAMP): requirements-extras.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-extras.txt && touch $(EXTRAS_STAMP) \
	  || echo "note: the drivers of requirements-extras.txt could not be installed; the multimachine tests will be skipped"

run: $(STAMP)
	$(PY) launch.py serve

# The browser tests drive the Debian chromium package (never a downloaded browser), the multimachine
# tests the Debian redis-server and postgresql packages (servers started on loopback ports in a
# temporary folder); each is skipped when its package is missing and cannot be installed here.
APT_INSTALL = apt-get install -y -qq $(1) >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(1) >/dev/null 2>&1; }

test: $(STAMP) $(EXTRAS_STAMP)
	@command -v chromium >/dev/null 2>&1 || { $(call APT_INSTALL,chromium); } \
	  || echo "note: chromium could not be installed; the browser tests will be skipped"
	@command -v redis-server >/dev/null 2>&1 || { $(call APT_INSTALL,redis-server); } \
	  || echo "note: redis-server could not be installed; the multimachine tests will be skipped"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(call APT_INSTALL,postgresql); } \
	  || echo "note: postgresql could not be installed; the multimachine tests will be skipped"
	$(PY) -m pytest

# Label Studio (PyPI label-studio, its own virtualenv: its pins clash with ours) for the slow test
# against the real thing; installed only when missing (about 2.5 minutes), the test about 4.5.
LS_VENV ?= .venv-ls
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV) && timeout 900 $(LS_VENV)/bin/pip install --quiet label-studio "sentry-sdk<3" \
	  && touch $@ || echo "note: label-studio could not be installed; its test will be skipped"

test-label-studio: $(STAMP) $(LS_VENV)/.installed
	$(PY) -m pytest -m label_studio tests/test_label_studio_real.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache
