# unboxed: the two commands of the README are `make demo` and `make test`; both set up first.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
LAB_HOSTS ?= 3

.PHONY: setup demo test test-unit test-system lab-up lab-down reset clean

setup:
	./scripts/install-deps

demo: setup lab-up
	ansible-playbook site.yml
	ansible-playbook verify.yml

lab-up: setup
	ansible-playbook -i localhost, playbooks/local_lab.yml -e lab_state=up -e lab_host_count=$(LAB_HOSTS)

lab-down: setup
	ansible-playbook -i localhost, playbooks/local_lab.yml -e lab_state=down

reset: setup
	ansible-playbook reset.yml

test: setup
	pytest

test-unit: setup
	pytest tests/unit

test-system: setup
	pytest tests/system
