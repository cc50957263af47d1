"""Images per second of each model: one training step (forward, backward, AdamW) and inference
(pseudo_healthy), at the default sizes, batch 32 of 96 x 112 slices (2 mm model space).

images/s = 32 / the mean time of a round (pytest-benchmark's "OPS" column times 32). DAL's
step does several networks' work; the groups put it beside the baselines and its ablations,
bfloat16 autocast beside float32 (which is faster depends on the CPU: dal train's ``amp: auto``
times a step both ways at its start; skipped on a CPU without native bfloat16, where dal train
runs float32), and the channels-last memory format that
training and inference use beside torch's default layout. `python scripts/profile_step.py dal`
shows where a step's time goes.
"""
import pytest
import torch

from dal.engine.train import cpu_has_bf16
from dal.models import LossConfig, ModelConfig, build_model

BATCH, H, W = 32, 96, 112


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(BATCH, 1, H, W, generator=g)
    return {"image": image, "view1": image, "view2": torch.rand(BATCH, 1, H, W, generator=g),
            "mask": torch.ones(BATCH, 1, H, W),
            "tissue": torch.softmax(torch.randn(BATCH, 4, H, W, generator=g), 1)}


def step_function(model, batch, bf16=False):
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    return step


VARIANTS = {
    "dal": ModelConfig(kind="dal"),
    "ae": ModelConfig(kind="ae"),
    "dae": ModelConfig(kind="dae"),
    "dal-second-view-grad": ModelConfig(kind="dal", second_view_grad=True),
    "dal-half-batch-auxiliary": ModelConfig(kind="dal", auxiliary_fraction=0.5),  # the step before 0.25
    "dal-whole-batch-auxiliary": ModelConfig(kind="dal", auxiliary_fraction=1.0),  # the step before 0.5
    "dal-no-restoration": ModelConfig(kind="dal", restoration=False),
    "dal-no-onehot": ModelConfig(kind="dal", onehot=False),
}


def build(name, channels_last=True):
    """The model as `dal train` and `dal.Detector` run it: channels-last (unless told otherwise)."""
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], LossConfig())
    return model.to(memory_format=torch.channels_last) if channels_last else model


@pytest.mark.benchmark(group=f"train step, batch {BATCH} x {H}x{W}, float32")
@pytest.mark.parametrize("name", list(VARIANTS))
def test_train_step(run, batch, name):
    run(step_function(build(name), batch), rounds=3)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16 (no AVX512-BF16 or AMX): autocast "
                                               "would emulate it, and dal train runs float32 here")
@pytest.mark.benchmark(group=f"train step, batch {BATCH} x {H}x{W}, bfloat16 autocast")
@pytest.mark.parametrize("layout", ["channels-last", "contiguous"])
@pytest.mark.parametrize("name", ["dal", "dal-half-batch-auxiliary", "dal-no-restoration", "ae", "dae"])
def test_train_step_bf16(run, batch, name, layout):
    run(step_function(build(name, layout == "channels-last"), batch, bf16=True), rounds=3)


@pytest.mark.benchmark(group=f"inference (pseudo_healthy), batch {BATCH} x {H}x{W}")
@pytest.mark.parametrize("name", ["dal", "ae", "dae"])
def test_inference(run, batch, name):
    model = build(name).eval()
    run(lambda: model.pseudo_healthy(batch["image"]), rounds=3)
