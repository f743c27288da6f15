# DSPEx Cluster — the two commands a newcomer needs are `make run` and `make test`.
# Everything installs itself on first use; `make setup` is idempotent.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
MIX_BUILD := beam/_build/.compiled
OTP_LIBS := .cache/otp-libs/.stamp

.PHONY: setup run test test-python test-beam check-newer-elixir lint format bench fuzz clean release

setup: $(STAMP) $(OTP_LIBS) $(MIX_BUILD) .ci/.ops-tools-ok

# System packages: Debian's Erlang/OTP 25 and Elixir, when missing.
.ci/.otp-ok:
	@if ! command -v erl >/dev/null || ! command -v mix >/dev/null; then \
	  echo "==> installing erlang-nox and elixir (Debian)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq erlang-nox erlang-dev elixir >/dev/null; \
	fi
	@command -v ip >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq iproute2 >/dev/null; }
	@command -v dnsmasq >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dnsmasq-base >/dev/null; }
	@touch $@

# Debian's chromium and its driver (the dashboard's browser test drives them) and
# docker-compose (the compose file's validation; without its recommended Docker engine),
# when missing.
.ci/.ops-tools-ok:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || \
	    ! command -v docker-compose >/dev/null; then \
	  echo "==> installing chromium, chromium-driver and docker-compose (Debian)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
	    >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    docker-compose >/dev/null; \
	fi
	@touch $@

$(STAMP): pyproject.toml setup.py .ci/.otp-ok
	@echo "==> python venv in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test,bench,skills]'
	@touch $@

# Ra 2.2.0 (Raft, for the strong state) and its dependencies, built for OTP 25, come from Debian's
# rabbitmq-server package: downloaded and unpacked only (no RabbitMQ is installed or started).
# The app adds .cache/otp-libs/*/ebin to its code path (beam/mix.exs, tests/agents/beam_app.py).
OTP_LIB_NAMES := ra aten gen_batch_server seshat prometheus quantile_estimator cowboy cowlib ranch
$(OTP_LIBS): .ci/.otp-ok
	@echo "==> Ra and its dependencies from Debian's rabbitmq-server package"
	@set -e; rm -rf .cache/rabbitmq-deb .cache/otp-libs; mkdir -p .cache/rabbitmq-deb .cache/otp-libs; \
	  cd .cache/rabbitmq-deb; \
	  apt-get download rabbitmq-server >/dev/null 2>&1 || \
	    { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	      apt-get download rabbitmq-server >/dev/null; }; \
	  dpkg -x rabbitmq-server_*.deb root; \
	  plugins=$$(echo root/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins); \
	  for lib in $(OTP_LIB_NAMES); do \
	    dir=$$(ls -d "$$plugins/$$lib"-[0-9]* | head -1); test -d "$$dir/ebin"; \
	    cp -r "$$dir" ../otp-libs/; \
	  done; \
	  cd .. && rm -rf rabbitmq-deb && touch otp-libs/.stamp

$(MIX_BUILD): .ci/.otp-ok $(OTP_LIBS) $(shell find beam/lib beam/mix.exs beam/config -type f 2>/dev/null)
	@echo "==> compiling the BEAM application"
	@cd beam && MIX_ENV=dev mix compile --force >/dev/null && MIX_ENV=test mix compile >/dev/null
	@mkdir -p $(dir $@) && touch $@

run: setup
	@$(PY) -m dspex_cluster platform

test: setup
	@$(MAKE) --no-print-directory test-python test-beam

test-python: setup
	@$(PY) -m pytest -q tests

test-beam: setup
	@cd beam && bin/test

# The BEAM application as a `mix release` (prod): bin/dspex-node runs it when present.
release: setup
	@cd beam && MIX_ENV=prod mix release --overwrite --quiet

# The application also builds and passes its ExUnit suite on a newer Elixir (1.18, built once).
check-newer-elixir: setup
	@cd beam && bin/check-newer-elixir

lint: setup
	@$(VENV)/bin/ruff check python tests bench
	@cd beam && mix format --check-formatted

format: setup
	@$(VENV)/bin/ruff check --fix python tests bench || true
	@$(VENV)/bin/ruff format python tests bench
	@cd beam && mix format

# Benchmarks are not tests: each bench/bench_*.py writes JSON (and figures) under reports/bench/.
bench: setup
	@mkdir -p reports/bench
	@skipped=""; for b in bench/bench_*.py; do echo "==> $$b"; \
	  $(PY) $$b --out reports/bench; rc=$$?; \
	  if [ $$rc = 3 ]; then skipped="$$skipped $$b"; elif [ $$rc != 0 ]; then exit $$rc; fi; \
	done; if [ -n "$$skipped" ]; then echo "==> skipped (data set absent, see above):$$skipped"; fi

# Differential fuzzing of the C and pure codecs (make test runs a few seconds of it).
FUZZ_SECONDS ?= 600
fuzz: setup
	@$(PY) tests/etf/fuzz_etf.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) beam/_build reports .cache .ci/.otp-ok
