# unboxed: the two commands of the README are `make demo` and `make test`; both set up first.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
LAB_HOSTS ?= 3
# Debian releases of the lab's hosts, in turn: lab1 trixie, lab2 bookworm, lab3 trixie (docs/local-lab.md).
LAB_RELEASES ?= trixie,bookworm
# Each stage of `make test` runs through this: it prints the stage's time and records it for the summary.
STAGE := .ci/stage
export CI_STAGE_LOG ?= $(CURDIR)/tests/output/ci-stages.log

.PHONY: bench docs ee-context matrix watch
.PHONY: setup demo test test-unit test-system lint sanity units molecule lab-up lab-down reset

setup:
	./scripts/install-deps

demo: setup lab-up
	ansible-playbook site.yml
	ansible-playbook verify.yml

lab-up: setup
	ansible-playbook -i localhost, local_lab.yml -e lab_state=up -e lab_host_count=$(LAB_HOSTS) -e lab_releases=$(LAB_RELEASES)

lab-down: setup
	ansible-playbook -i localhost, local_lab.yml -e lab_state=down

reset: setup
	ansible-playbook reset.yml

# Every test, one stage after the other. A failed stage does not stop the others; the summary at the end
# lists each stage's time and result, and fails if any stage failed.
test:
	@rm -f $(CI_STAGE_LOG)
	@status=0; \
	$(STAGE) setup ./scripts/install-deps || exit 1; \
	$(STAGE) lint $(MAKE) --no-print-directory lint || status=1; \
	$(STAGE) unit pytest tests/unit || status=1; \
	$(STAGE) sanity $(MAKE) --no-print-directory sanity || status=1; \
	$(STAGE) units $(MAKE) --no-print-directory units || status=1; \
	$(STAGE) system pytest tests/system --durations=40 || status=1; \
	$(STAGE) molecule $(MAKE) --no-print-directory molecule || status=1; \
	$(STAGE) --summary && exit $$status

# pytest alone: unit tests, then the system tests (real mounts, namespaces, the local lab over SSH, the
# talk end to end, the built collection).
test-unit: setup
	pytest tests/unit

test-system: setup
	pytest tests/system

# ansible-lint, production profile (.ansible-lint), and yamllint (.yamllint). ansible-lint sets
# any_unparsed_is_failed off for its syntax-check rule (ansible/ansible-lint#3650) but not when it loads the
# playbooks that site.yml imports; before `make lab-up` the default inventory does not exist yet.
# Then the changelog (changelogs/config.yaml): every fragment, changelog.yaml, and CHANGELOG.md exactly as
# `antsibull-changelog generate` writes it (nobody edits it by hand).
lint:
	ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=false ansible-lint
	yamllint --strict .
	antsibull-changelog lint
	antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
	@generated=$$(mktemp) && antsibull-changelog generate --output $$generated --output-format md && \
	  { cmp -s $$generated CHANGELOG.md || { diff -u CHANGELOG.md $$generated; rm -f $$generated; \
	    echo 'CHANGELOG.md differs from what `antsibull-changelog generate` writes: add a fragment instead' >&2; exit 1; }; }; \
	  rm -f $$generated

# ansible-test from a path of the form ansible_collections/unboxed/lab (scripts/ansible-test copies the tree).
sanity:
	./scripts/ansible-test sanity --color no

units:
	./scripts/ansible-test units --color no

# Every molecule scenario (molecule/*), each on a local lab of its own.
molecule:
	molecule test --all

# The classroom benchmark (issue: classroom scale): writes bench/RESULTS.md and bench/time_vs_hosts.png.
bench: setup
	bench/run

# The execution environment's build context, offline (docs/execution-environment.md): .cache/ee/context.
ee-context: setup
	./scripts/ee-context

# The ansible-core matrix (docs/compatibility.md): the oldest core requires_ansible allows and the newest, each in a
# venv of its own - install, ansible-doc, unit tests, syntax checks and every module for real on this machine.
matrix: setup
	./scripts/matrix/run

# The collection's documentation in HTML (antsibull-docs + Sphinx): tests/output/docs/index.html (docs/index.md).
docs: setup
	./scripts/build-docs

# The live class board (docs/class-mode.md): grade the class every WATCH_INTERVAL seconds and serve the board on
# http://127.0.0.1:WATCH_PORT/board.html (this machine only). Ctrl-C stops the loop and the server.
WATCH_INTERVAL ?= 15
WATCH_PORT ?= 8000
CLASS_BOARD_DIR ?= $(CURDIR)/class_board

watch: setup
	@mkdir -p $(CLASS_BOARD_DIR)
	@python3 -m http.server --bind 127.0.0.1 --directory $(CLASS_BOARD_DIR) $(WATCH_PORT) >/dev/null 2>&1 & server=$$!; \
	trap 'kill $$server' EXIT; trap 'exit 0' INT TERM; \
	echo "Class board: http://127.0.0.1:$(WATCH_PORT)/board.html (every $(WATCH_INTERVAL) s; Ctrl-C stops)"; \
	while true; do \
	  UNBOXED_CLASS_BOARD_DIR=$(CLASS_BOARD_DIR) UNBOXED_CLASS_BOARD_REFRESH=$(WATCH_INTERVAL) \
	    ansible-playbook grade.yml $(WATCH_ARGS) || true; \
	  sleep $(WATCH_INTERVAL); \
	done
