# Two commands do everything on a fresh machine (see README.md):
#   make reproduce   set up, then run the experiment notebooks under a profile (default: cpu)
#   make test        set up, then run every test (what CI runs)
#   make site        render the notebooks and README into a static site in _site/ (open _site/index.html)
PROFILE ?= cpu
.PHONY: setup reproduce test readme site
setup:
	@bash tools/setup.sh
reproduce: setup
	.venv/bin/python -m sage_paper.reproduce --profile $(PROFILE)
test: setup
	@bash tools/test.sh
readme:
	.venv/bin/python tools/readme.py
site: setup
	.venv/bin/python tools/site.py
