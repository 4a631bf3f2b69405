# asyncds — common tasks. Local targets use .venv; `build`/`create_dataset` use Docker.
PY      ?= .venv/bin/python
IMAGE   ?= asyncds
CONFIG  ?= config.yaml

.PHONY: build create_dataset demo test bench clean venv

venv:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

build:
	docker build -t $(IMAGE) .

create_dataset:
	docker run --rm -e API_KEY -e API_SECRET -v "$(CURDIR)/outputs:/app/outputs" $(IMAGE) $(CONFIG)

demo:
	$(PY) -m asyncds examples/demo.yaml --emulator

test:
	$(PY) -m pytest -q

$(PY):
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

bench: $(PY)
	$(PY) -m pip install -q -e '.[test,bench]' && $(PY) -m benchmarks

clean:
	rm -rf outputs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
