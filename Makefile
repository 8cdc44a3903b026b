# The two everyday commands: `make up` (set up this machine and run site.yml) and
# `make test` (every check: lint, unit, integration, Molecule). See README.md.
SHELL := /bin/bash
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: up test venv lint pytest molecule bench clean

up: venv
	ansible-playbook site.yml

test: venv lint pytest molecule

venv:
	@bin/bootstrap

lint: venv
	yamllint --strict .
	ansible-lint --offline --profile production

pytest: venv
	bin/run-pytest

molecule: venv
	molecule test --all

bench: venv
	python benchmarks/db_setup.py
	python benchmarks/api_feed.py
