# Two entry points, each sets up .venv first (scripts/setup.sh).
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

# Main job on an embedded default: EVOS vs full vs uniform on scikit-image's astronaut.
demo: setup
	.venv/bin/evos-image fit skimage:astronaut --resolution 192 --backbone.width 96 \
		--iterations 500 --strategies evos full uniform --out outputs/demo

test: setup
	.venv/bin/python -m pytest -q
