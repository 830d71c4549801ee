"""Full-size SDXL (random weights from the published configs in ../shared) through the real training
and generation paths (more like this too), at 128 px so it fits a CPU: the production shapes, the hub's fp16
variant files and every optional training feature at once, which the tiny profile cannot vouch for.
About 2.5 minutes and 20.7 GiB of RAM (peak RSS; 19.6 before more like this) on 2 CPU cores, so it is marked
slow (`make test-all`)."""

from __future__ import annotations

import gc
import json
import os

import pytest
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import SHARED, need
from train.lora import ADAPTER_FILE, EMBEDDINGS_FILE, KOHYA_FILE

pytestmark = pytest.mark.slow
NEEDED_RAM_GIB = 22


@pytest.fixture(scope="module")
def full_size_sdxl(tmp_path_factory):
    from headshots.tiny_sdxl import full_size_sdxl as built_or_build

    config = need(SHARED / "models" / "sdxl-base-1.0-config")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if ram < NEEDED_RAM_GIB:
        pytest.skip(f"full-size SDXL in fp32 needs about {NEEDED_RAM_GIB} GiB of RAM; this machine has {ram:.0f}")
    out = built_or_build(config, tmp_path_factory.mktemp("models") / "sdxl-random")
    assert built_or_build(out, out.with_name("unused")) == out  # a built folder is loaded as it is, not rebuilt
    return out


def test_full_size_sdxl_trains_with_every_feature_and_generates(prepared_user, make_config, full_size_sdxl):
    from infer.generate import generate, load_pipelines, person_context
    from infer.variations import more_like
    from train.recipe import train

    full_size = (f"model.pretrained={full_size_sdxl}", "model.variant=fp16", "train.rank=16", "run=full")
    features = ("train.max_steps=2", "train.checkpoint_every=1", "train.text_encoder_lora=true", "train.pivotal_tuning=true",
                "train.prior.enabled=true", "train.prior.num_images=1", "train.validation.every=2",
                "train.validation.seeds=[0]", "train.validation.prompts=['photo of {trigger} {class_noun}']")
    adapter = train(make_config("alice", *full_size, *features))
    gc.collect()  # the trained models go before the pipeline comes

    weights = load_file(str(adapter / ADAPTER_FILE))
    assert {key.split(".")[0] for key in weights} == {"unet", "text_encoder", "text_encoder_2"}
    # rank 16 on every attention projection of SDXL's 70 transformer blocks (to_q/k/v/out, self and cross)
    unet_down = [v for k, v in weights.items() if k.startswith("unet.") and k.endswith(".lora.down.weight")]
    assert len(unet_down) == 70 * 2 * 4 and all(v.shape[0] == 16 for v in unet_down)
    kohya = load_file(str(adapter / KOHYA_FILE))
    assert {k.split("_")[1] for k in kohya} == {"unet", "te1", "te2"}
    vectors = load_file(str(adapter / EMBEDDINGS_FILE))
    assert vectors["clip_l"].shape == (2, 768) and vectors["clip_g"].shape == (2, 1280)
    validation = json.loads((adapter.parent / "validation.json").read_text())
    assert [entry["step"] for entry in validation["history"]] == [2]
    assert (adapter.parent / "adapter-best" / ADAPTER_FILE).is_file()

    sampling = make_config("alice", *full_size, "infer.styles=[linkedin]", "infer.steps=2", "infer.more.image=linkedin-00.png",
                           "infer.more.count=1")
    pipes = load_pipelines(sampling, person_context(sampling).adapter)  # one pipeline for generate and more like this
    samples = generate(sampling, pipes)
    assert len(samples) == 2
    manifest = json.loads((adapter.parent / "samples" / "manifest.json").read_text())
    assert all(entry["prompt"].count("<s0><s1>") == 1 for entry in manifest["images"])  # the pivotal tokens
    for sample in samples:
        with Image.open(adapter.parent / "samples" / sample.file) as image:
            assert image.size == (128, 128)

    # More like this on the production shapes: img2img made by from_pipe over the fused adapter and pivotal tokens.
    (variation,) = more_like(sampling, pipes)
    assert variation.source == "linkedin-00.png" and variation.prompt.count("<s0><s1>") == 1
    with Image.open(adapter.parent / "samples" / variation.file) as image:
        assert image.size == (128, 128)
