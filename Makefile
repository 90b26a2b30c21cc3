# Two entry points, each sets up .venv first (scripts/setup.sh); `make test` also installs the
# system packages the tests need when missing: headless Chromium (the viewer's browser test never
# skips) and libusb-1.0 (open3d, which every ns-export command imports).
.PHONY: setup demo demo-image test

setup:
	bash scripts/setup.sh

# Main job on an embedded default: uniform vs EVOS ray selection on the package's procedural
# scene, same budget; prints PSNR / SSIM / time side by side and plots PSNR against step.
demo: setup
	.venv/bin/evos-nerf-demo

# Image INR: EVOS vs full vs uniform on scikit-image's astronaut (the paper's own setting).
demo-image: setup
	.venv/bin/evos-image fit skimage:astronaut --resolution 192 --backbone.width 96 \
		--iterations 500 --strategies evos full uniform --out outputs/demo

test:
	bash scripts/setup.sh --system
	.venv/bin/python -m pytest -q
