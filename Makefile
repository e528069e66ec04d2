# make demo : set up .venv (if needed) and run the main job on the embedded planted-bias data
# make test : set up .venv (if needed) and run the test suite
# make img2dataset : the downloader's own environment .venv-img2dataset (scripts/download.py calls it)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
I2D_VENV ?= .venv-img2dataset
I2D_STAMP := $(I2D_VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
ACCELERATE := $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: install neural img2dataset demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the model transforms' libraries (transforms/neural): the tests need them, the demo does not
NEURAL_STAMP := $(VENV)/.neural-stamp
$(NEURAL_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,neural]'
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

test: neural img2dataset
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: neural
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs cache .pytest_cache
