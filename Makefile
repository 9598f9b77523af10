# cria-server: two commands on a fresh machine.
#   make serve   create .venv, install the project, run `cria serve` (ARGS="--port 9000 ...")
#   make test    install the dev extra (+ Debian's chromium, haproxy, kubernetes-client if
#                missing), run pytest (PYTEST_ARGS=...)
#   make cuda    rebuild llama-cpp-python in .venv with the CUDA backend (CUDA_ARCHS=..., see README)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
ARGS ?=
PYTEST_ARGS ?=
# make cuda: GPU architectures (CMake's CUDA_ARCHITECTURES; empty: "native" when nvidia-smi sees
# a GPU, else 90) and CPU backend ("host": this CPU's instruction sets, or "all" x86 variants).
CUDA_ARCHS ?=
CPU_VARIANTS ?= host
export DEBIAN_FRONTEND := noninteractive

.PHONY: serve test install install-dev toolchain browser deploy-tools lint settings-table clean cuda cpu

# llama-cpp-python compiles llama.cpp from source: it needs a C/C++ compiler (pip fetches
# cmake itself). On a fresh Debian/Ubuntu machine as root, install one; otherwise say how.
toolchain:
	@command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && apt-get install -y --no-install-recommends build-essential; \
	  else echo "A C/C++ compiler is needed to build llama-cpp-python (e.g. apt-get install build-essential)"; exit 1; fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run pip only when pyproject.toml changes; pip's wheel cache keeps the
# llama-cpp-python build, so a fresh venv reinstalls it in seconds.
$(VENV)/.installed: pyproject.toml | $(BIN)/python toolchain
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python toolchain
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The CUDA build replaces the CPU one in $(VENV) (the stamps stay valid: pip keeps it, since the
# pinned version is already installed). The toolkit comes from PyPI; no GPU or driver needed.
cuda: | $(BIN)/python toolchain
	CUDA_ARCHS='$(CUDA_ARCHS)' CPU_VARIANTS='$(CPU_VARIANTS)' scripts/build_llama_cuda.sh $(BIN)/python
	$(PIP) install -e .
	touch $(VENV)/.installed

# Back to the CPU build (pip's cached CPU wheel when there is one).
cpu: | $(BIN)/python toolchain
	$(PIP) install --force-reinstall --no-deps "$$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"
	$(PIP) install -e .
	touch $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/cria serve $(ARGS)

# Browser tests drive Debian's chromium (no browser download): install it if missing.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends chromium; \
	  else echo "Browser tests need /usr/bin/chromium: sudo apt-get install chromium"; exit 1; fi; }

# The deployment tests run Debian's haproxy (deploy/haproxy) and kubectl (kubernetes-client,
# for `kubectl kustomize`): install what is missing. Any kubectl already on PATH will do.
deploy-tools:
	@missing=""; test -x /usr/sbin/haproxy || missing="$$missing haproxy"; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	test -z "$$missing" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; \
	  else echo "The deployment tests need:$$missing (sudo apt-get install$$missing)"; exit 1; fi; }

test: $(VENV)/.installed-dev browser deploy-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy

settings-table: $(VENV)/.installed
	$(BIN)/python -c "import pathlib, re; from app.settings import settings_table_markdown as t; \
	p = pathlib.Path('README.md'); \
	p.write_text(re.sub(r'(<!-- settings-table:start[^>]*-->\n).*?(<!-- settings-table:end -->)', \
	lambda m: m.group(1) + t() + m.group(2), p.read_text(), flags=re.S))"
	$(BIN)/python -c "import pathlib, re; from app.limits import readme_table as t; \
	p = pathlib.Path('README.md'); \
	p.write_text(re.sub(r'(<!-- limits-table:start[^>]*-->\n).*?(\n<!-- limits-table:end -->)', \
	lambda m: m.group(1) + t() + m.group(2), p.read_text(), flags=re.S))"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
