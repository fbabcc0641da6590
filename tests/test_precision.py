"""bf16 autocast of the base (repro.model.precision, PlaceModel.set_precision) against the float32 reference,
on CPU autocast: the pooling stays float32 and descriptors and gradients agree within stated tolerances."""
import pytest
import torch

from repro.errors import ConfigError
from repro.model import build_model
from repro.model.precision import resolve_precision, set_tf32

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")

# bf16 keeps 8 bits of mantissa: a conv stack in bf16 moves each activation by ~0.4% relative, so
# descriptors and gradients of the same images agree to a cosine of 0.99 or better, not to float32 bits.
COSINE = 0.99


def _model(pooling, seed=0):
    torch.manual_seed(seed)
    m = build_model("alexnet", pooling, num_clusters=8, weights=None)
    if pooling == "netvlad":
        m.pool.init_from_centroids(torch.nn.functional.normalize(torch.randn(8, 256), dim=1), alpha=30.0)
    return m


@pytest.mark.parametrize("pooling", ["netvlad", "fmax"])
def test_bf16_descriptors_and_gradients_agree_with_float32(pooling):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 96, 128)
    ref, low = _model(pooling), _model(pooling).set_precision("bf16")
    low.load_state_dict(ref.state_dict())
    d32, d16 = ref(images), low(images)
    assert d16.dtype == torch.float32 and d16.shape == d32.shape  # pooling ran in float32
    cos = torch.nn.functional.cosine_similarity(d32, d16, dim=1)
    assert (cos > COSINE).all(), cos
    target = torch.randn_like(d32)
    (d32 * target).sum().backward()
    (d16 * target).sum().backward()
    for (name, p32), (_, p16) in zip(ref.named_parameters(), low.named_parameters()):
        if p32.grad is None:
            continue
        g32, g16 = p32.grad.flatten(), p16.grad.flatten()
        if g32.norm() == 0:
            continue
        assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > COSINE, name


def test_netvlad_receives_float32_maps_under_bf16():
    m = _model("netvlad").set_precision("bf16")
    seen = {}

    def record(module, args):
        seen["dtype"] = args[0].dtype  # returns None: the input is left as it is

    m.pool.register_forward_pre_hook(record)
    m(torch.randn(2, 3, 96, 128))
    assert seen["dtype"] == torch.float32


def test_float32_is_the_default_and_unchanged():
    torch.manual_seed(2)
    images = torch.randn(2, 3, 96, 128)
    a, b = _model("netvlad"), _model("netvlad")
    assert a.precision == "float32"
    assert torch.equal(a(images), b.set_precision("float32")(images))


def test_precision_choices():
    assert resolve_precision("auto", "cpu") == "float32"
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="resolve"):
        _model("fmax").set_precision("auto")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
