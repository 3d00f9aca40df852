# All setup on a fresh machine: `make run` (launch the app) or `make test` (run the tests).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS_STAMP := $(VENV)/.installed-extras
LS_VENV ?= .venv-ls
LS_INSTALL_TIMEOUT_S ?= 360

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

test: $(STAMP) $(EXTRAS_STAMP) $(LS_VENV)/.installed
	@command -v chromium >/dev/null 2>&1 || { $(call APT_INSTALL,chromium); } \
	  || echo "note: chromium could not be installed; the browser tests will be skipped"
	@command -v redis-server >/dev/null 2>&1 || { $(call APT_INSTALL,redis-server); } \
	  || echo "note: redis-server could not be installed; the multimachine tests will be skipped"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(call APT_INSTALL,postgresql); } \
	  || echo "note: postgresql could not be installed; the multimachine tests will be skipped"
	$(PY) -m pytest

# Label Studio (PyPI label-studio, its own virtualenv: its pins clash with ours) for the test against
# the real thing (tests/test_label_studio_real.py, part of `make test`): installed only when missing
# (about 2 minutes on two cores; cut off after LS_INSTALL_TIMEOUT_S so that `make test` keeps its 15
# minutes), a Label Studio already in .venv-ls (the README's) is used as it is. A failed install
# prints a note, leaves no label-studio command (the test is then skipped, saying so) and is tried
# again by the next `make test`.
$(LS_VENV)/.installed:
	@if test -x $(LS_VENV)/bin/label-studio; then touch $@; \
	elif $(PYTHON) -m venv $(LS_VENV) \
	  && timeout $(LS_INSTALL_TIMEOUT_S) $(LS_VENV)/bin/pip install --quiet label-studio "sentry-sdk<3"; then \
	  touch $@; \
	else rm -f $(LS_VENV)/bin/label-studio; \
	  echo "note: label-studio could not be installed into $(LS_VENV) (within $(LS_INSTALL_TIMEOUT_S) s); its test will be skipped"; fi

test-label-studio: $(STAMP) $(LS_VENV)/.installed
	$(PY) -m pytest -m label_studio tests/test_label_studio_real.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache
