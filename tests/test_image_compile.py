"""torch.compile of the SIREN's training forward: when it is used, that it falls back, that it agrees."""

import shutil
import warnings

import pytest
import torch
from torch._dynamo.exc import TorchDynamoException

from evos_nerf.core import EvolutionConfig
from evos_nerf.errors import NonFiniteLossError
from evos_nerf.image.backbones import BackboneConfig, Siren
from evos_nerf.image.compiled import COMPILE_MIN_WORK, TrainingForward, should_compile
from evos_nerf.image.signal import load_image
from evos_nerf.image.trainer import ImageFitter

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_image():
    return load_image("skimage:astronaut", resolution=24)


def test_auto_compiles_only_long_siren_runs_on_the_cpu():
    long_run = int(COMPILE_MIN_WORK // (256 * 256)) + 1
    assert should_compile("auto", "siren", CPU, 256 * 256, 2000)
    assert should_compile("auto", "siren", CPU, 256 * 256, long_run)
    assert not should_compile("auto", "siren", CPU, 256 * 256, long_run - 2)
    assert not should_compile("auto", "siren", CPU, 48 * 48, 300)  # the tests' runs stay eager
    assert not should_compile("auto", "hashgrid", CPU, 512 * 512, 5000)
    assert not should_compile("auto", "siren", torch.device("cuda"), 512 * 512, 5000)
    assert should_compile("on", "pemlp", CPU, 16, 1)
    assert not should_compile("off", "siren", CPU, 512 * 512, 5000)
    with pytest.raises(ValueError, match="auto, on or off"):
        should_compile("yes", "siren", CPU, 16, 1)  # type: ignore[arg-type]


def test_the_test_suite_trains_eagerly_by_default(tiny_image):
    fitter = ImageFitter(tiny_image, "evos", 50, EvolutionConfig(), BackboneConfig(width=16))
    assert not fitter.forward.compiled


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise TorchDynamoException("backward graph failed to compile")


def _fake_compile(where: str):
    def fake(model, **kwargs):
        def compiled(coords):
            if where == "forward":
                raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found")
            return _FailingBackward.apply(model(coords))

        return compiled

    return fake


def _history(fitter, iterations):
    return [(e.step, e.psnr) for e in fitter.run(iterations, iterations // 2)]


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_failed_compile_falls_back_to_eager_and_trains_as_if_never_compiled(tiny_image, monkeypatch, where):
    config, backbone = EvolutionConfig(), BackboneConfig(width=16, compile="on")
    eager = ImageFitter(tiny_image, "evos", 20, config, BackboneConfig(width=16, compile="off"))
    expected = _history(eager, 20)

    monkeypatch.setattr(torch, "compile", _fake_compile(where))
    fitter = ImageFitter(tiny_image, "evos", 20, config, backbone)
    assert fitter.forward.compiled
    with pytest.warns(RuntimeWarning, match="training the SIREN eagerly"):
        got = _history(fitter, 20)
    assert not fitter.forward.compiled
    assert "TorchDynamoException" in fitter.forward.fallback_reason
    assert got == expected  # the failed step was redone eagerly from the same state


def test_torch_compile_unavailable_at_construction_means_eager(monkeypatch):
    def unavailable(model, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unavailable)
    with pytest.warns(RuntimeWarning, match="Dynamo is not supported"):
        forward = TrainingForward(Siren(8, 3), compile=True)
    assert not forward.compiled
    assert forward(torch.zeros(4, 2)).shape == (4, 3)


def test_errors_that_are_not_compile_failures_are_not_swallowed(tiny_image, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (lambda coords: model(coords) * float("nan")))
    fitter = ImageFitter(tiny_image, "evos", 10, EvolutionConfig(), BackboneConfig(width=16, compile="on"))
    with pytest.raises(NonFiniteLossError):
        fitter.train_step()
    assert fitter.forward.compiled


def test_coordinate_layer_gradients_equal_nn_linear():
    torch.manual_seed(0)
    fast, plain = Siren(32, 4), Siren(32, 4)
    plain.load_state_dict(fast.state_dict())
    plain.body[0].thin_input = False  # nn.Linear's own backward
    coords, target = torch.rand(500, 2) * 2 - 1, torch.rand(500, 3)
    grads = []
    for model in (fast, plain):
        loss = ((model(coords) - target) ** 2).mean()
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_compiled_siren_trains_like_the_eager_one(tiny_image):
    """Real inductor compile of a small SIREN: same predictions and gradients up to float rounding."""
    torch.manual_seed(0)
    model = Siren(16, 4)
    coords, target = torch.rand(300, 2) * 2 - 1, torch.rand(300, 3)
    forward = TrainingForward(model, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would make this test vacuous
        for size in (300, 150):  # two batch sizes, as key and ordinary iterations have
            out = forward(coords[:size])
            loss = ((out - target[:size]) ** 2).mean()
            compiled_grads = torch.autograd.grad(loss, list(model.parameters()))
            eager_out = model(coords[:size])
            eager_grads = torch.autograd.grad(((eager_out - target[:size]) ** 2).mean(), list(model.parameters()))
            torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
            for a, b in zip(compiled_grads, eager_grads):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert forward.compiled
