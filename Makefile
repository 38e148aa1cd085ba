# Two commands do everything on a fresh machine (see README.md):
#   make reproduce   set up, then run the experiment notebooks under a profile (default: cpu)
#   make test        set up, then run every test (what CI runs)
PROFILE ?= cpu
.PHONY: setup reproduce test readme
setup:
	@bash tools/setup.sh
reproduce: setup
	.venv/bin/python -m sage_paper.reproduce --profile $(PROFILE)
test: setup
	@bash tools/test.sh
readme:
	.venv/bin/python tools/readme.py
