# Two entry points, each sets up .venv first (scripts/setup.sh).
.PHONY: setup demo demo-image test

setup:
	bash scripts/setup.sh

# Main job on an embedded default: evos-nerf on the package's procedural scene, then test PSNR.
demo: setup
	.venv/bin/evos-nerf-demo

# Image INR: EVOS vs full vs uniform on scikit-image's astronaut (the paper's own setting).
demo-image: setup
	.venv/bin/evos-image fit skimage:astronaut --resolution 192 --backbone.width 96 \
		--iterations 500 --strategies evos full uniform --out outputs/demo

test: setup
	.venv/bin/python -m pytest -q
