# secoustic-jax: `make test` and `make demo` work from a fresh clone (they install what they need).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
SYSSTAMP := $(VENV)/.sysdeps
PYTEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: install sysdeps kernels test test-full demo reproduce reproduce-21_5hz bench corpus clean

# Debian packages: synthesizers for the embedded corpus, sox, Asterisk prompts for evaluation,
# g++ for the CPU custom-call kernels (secoustic_jax/kernels).
SYS_PKGS := g++ festival festlex-cmu festlex-poslex festvox-kallpc16k festvox-kdlpc16k \
    festvox-us-slt-hts flite espeak-ng libespeak-ng1 sox libsox-fmt-all \
    asterisk-core-sounds-en asterisk-core-sounds-en-g722

$(SYSSTAMP):
	@mkdir -p $(VENV)
	@if ! command -v g++ >/dev/null || ! command -v festival >/dev/null || ! command -v flite >/dev/null || ! command -v espeak-ng >/dev/null \
	    || [ ! -d /usr/share/asterisk/sounds/en_US_f_Allison ]; then \
	  echo "== installing Debian packages: $(SYS_PKGS)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYS_PKGS) >/dev/null; \
	fi
	@touch $@

$(STAMP): pyproject.toml
	@echo "== creating $(VENV) and installing (torch CPU first and alone)"
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[torch,eval,data,dev]"
	@rm -f $(VENV)/.installed-*; touch $@

# The kernel library is named by a hash of its source, jaxlib and flags: this is a no-op
# when it is current, and a rebuild after any change to secoustic_jax/kernels/*.cc or *.h.
kernels: $(STAMP) $(SYSSTAMP)
	@$(PY) -m secoustic_jax.kernels >/dev/null

install: $(STAMP) $(SYSSTAMP) kernels
sysdeps: $(SYSSTAMP)

# Fast default set (slow tests excluded by pyproject addopts).
test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

# Everything, slow tests included.
test-full: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "" 

corpus: install
	$(VENV)/bin/secoustic corpus build --out cache/corpus --size default

demo: install
	$(PY) -m secoustic_jax.demo --out demo

# The reproduction run of docs/reproduction.md: configs/small.py, steps sized to the budget.
reproduce: install
	$(PY) -m secoustic_jax.demo --config configs/small.py --budget-min 125 --sustained-step 1.1 --out reports/small

# Its 21.5 Hz twin (docs/reproduction_21_5hz.md).
reproduce-21_5hz: install
	$(PY) -m secoustic_jax.demo --config configs/small_21_5hz.py --budget-min 125 --sustained-step 1.1 --out reports/small_21_5hz

bench: install
	$(PY) bench/run_all.py --out bench/results.json

clean:
	rm -rf $(VENV) cache runs .pytest_cache
