"""Optional text-side training on the tiny profile: LoRA on both text encoders and pivotal tuning
(new token vectors), exported in the formats diffusers loads, resumable like the UNet LoRA."""

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from train.lora import ADAPTER_FILE, EMBEDDINGS_FILE, KOHYA_FILE
from train.recipe import train

TEXT_SIDE = ("train.text_encoder_lora=true", "train.pivotal_tuning=true", "train.embedding_lr=1e-2")


def _pipe(tiny_model):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe, prompt):
    return pipe(prompt, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images


def test_text_encoder_lora_and_pivotal_tokens_train_export_and_load(prepared_user, make_config, tiny_model):
    cfg = make_config("alice", "run=text", "train.max_steps=3", "train.validation.every=3", "train.validation.seeds=[0]",
                      *TEXT_SIDE)
    adapter = train(cfg)
    weights = load_file(str(adapter / ADAPTER_FILE))
    prefixes = {key.split(".")[0] for key in weights}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    assert {k.split("_")[1] for k in load_file(str(adapter / KOHYA_FILE)) if k.startswith("lora_te")} == {"te1", "te2"}

    vectors = load_file(str(adapter / EMBEDDINGS_FILE))
    assert set(vectors) == {"clip_l", "clip_g"} and vectors["clip_l"].shape == (2, 32)
    with safe_open(str(adapter / EMBEDDINGS_FILE), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["headshots.trigger"] == "<s0><s1>" and json.loads(meta["headshots.pivotal_tokens"]) == ["<s0>", "<s1>"]

    pipe = _pipe(tiny_model)
    person = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer("person", add_special_tokens=False).input_ids[0]]
    assert not torch.allclose(vectors["clip_l"][0], person), "the new vectors were trained away from their init"
    base = _image(pipe, "a photo of <s0><s1> person")
    pipe.load_lora_weights(str(adapter))
    for key, encoder, tokenizer in (("clip_l", pipe.text_encoder, pipe.tokenizer), ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)):
        pipe.load_textual_inversion(vectors[key], token=["<s0>", "<s1>"], text_encoder=encoder, tokenizer=tokenizer)
    tuned = _image(pipe, "a photo of <s0><s1> person")
    assert abs(base - tuned).max() > 1e-4


def test_text_side_training_resumes_to_the_same_weights(prepared_user, make_config):
    straight = train(make_config("alice", "run=t-straight", "train.max_steps=4", "train.checkpoint_every=2", *TEXT_SIDE))
    train(make_config("alice", "run=t-resumed", "train.max_steps=2", "train.checkpoint_every=2", *TEXT_SIDE))
    resumed = train(make_config("alice", "run=t-resumed", "train.max_steps=4", "train.checkpoint_every=2", *TEXT_SIDE))
    for name in (ADAPTER_FILE, EMBEDDINGS_FILE):
        reference, result = load_file(str(straight / name)), load_file(str(resumed / name))
        assert reference.keys() == result.keys()
        for key, value in reference.items():
            torch.testing.assert_close(result[key], value, rtol=0, atol=1e-6)


def test_generate_uses_the_best_adapter_and_its_pivotal_tokens(prepared_user, make_config):
    """infer.adapter=best picks adapter-best/; its tokens are loaded and stand for the person in prompts."""
    from infer.generate import generate

    overrides = ("run=best", "train.max_steps=2", "train.validation.every=2", "train.validation.seeds=[0]", *TEXT_SIDE,
                 "infer.adapter=best", "infer.styles=[linkedin]", "infer.images_per_style=1", "infer.steps=2")
    train(make_config("alice", *overrides))
    samples = generate(make_config("alice", *overrides))
    assert len(samples) == 1 and "<s0><s1> person" in samples[0].prompt


def test_captions_holding_the_person_s_tokens_pool_at_their_end(tiny_model, tmp_path):
    """SDXL's text encoders carry the legacy eos_token_id 2 (as the tiny ones do): transformers then pools at the
    highest token id, which, once <s0><s1> are added, is <s1>, so every caption got the same pooled embedding, blind to
    what followed the person (an ML review). Pooled at the end token, captions that differ after it differ."""
    from train.text import add_pivotal_tokens

    pipe = _pipe(tiny_model)
    encoder, tokenizer = pipe.text_encoder_2, pipe.tokenizer_2
    assert encoder.config.eos_token_id == 2
    add_pivotal_tokens(tokenizer, encoder, ["<s0>", "<s1>"], "person")

    def pooled(caption: str) -> torch.Tensor:
        ids = tokenizer(caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            return encoder(ids).text_embeds[0]

    assert not torch.allclose(pooled("a photo of <s0><s1> person, smiling"), pooled("a photo of <s0><s1> person, outdoors"))

    from safetensors.torch import save_file

    from infer.generate import load_person_tokens  # generating: the tokens loaded from the adapter, pooled the same way
    pipe = _pipe(tiny_model)
    vectors = {key: torch.randn(2, enc.get_input_embeddings().weight.shape[1])
               for key, enc in (("clip_l", pipe.text_encoder), ("clip_g", pipe.text_encoder_2))}
    save_file(vectors, str(tmp_path / EMBEDDINGS_FILE), metadata={"headshots.pivotal_tokens": json.dumps(["<s0>", "<s1>"])})
    load_person_tokens(pipe, tmp_path)
    encoder, tokenizer = pipe.text_encoder_2, pipe.tokenizer_2
    assert not torch.allclose(pooled("a photo of <s0><s1> person, smiling"), pooled("a photo of <s0><s1> person, outdoors"))


def test_every_trained_text_weight_reaches_the_loss(make_config):
    """SDXL's conditioning reads the first encoder's penultimate layer and nothing after it: a LoRA on its last layer got
    no gradient, stayed at its init, and stopped two-process (DDP) training at its second step (a training review)."""
    from headshots.sdxl import load_components
    from train.cache import text_conditioning, tokenize_both
    from train.text import setup_text_side

    cfg = make_config("alice", *TEXT_SIDE)
    parts = load_components(cfg.model)
    text = setup_text_side(parts, cfg.train, "person")
    prompt_embeds, pooled = text_conditioning(text.text_encoders, tokenize_both(parts, ["a photo of <s0><s1> person"]))
    (prompt_embeds.square().mean() + pooled.square().mean()).backward()
    named = [(f"text_encoder{k or ''}.{name}", p) for k, encoder in enumerate(text.text_encoders)
             for name, p in encoder.named_parameters() if p.requires_grad]
    assert len(named) == len(text.lora_params) + len(text.embeddings) > 2
    assert [name for name, p in named if p.grad is None] == []  # lora_A: zero at first (B starts at 0), but reached


def test_the_person_s_token_vectors_are_pulled_back_to_their_vocabulary_s_scale():
    """Nothing else bounds them: a thousand steps at embedding_lr can carry them far past every word's scale (a
    training review; diffusers' advanced DreamBooth script pulls them back after every step). The pull keeps their
    direction, and moves their spread a tenth of the way (in log) each step."""
    from train.text import TextSide

    vectors = torch.nn.Parameter(torch.randn(2, 32) * 10.0)
    before = vectors.detach().clone()
    text = TextSide([], [], [vectors], ["<s0>", "<s1>"], vocabulary_std=[1.0])
    text.keep_tokens_in_scale()
    torch.testing.assert_close(vectors.std(), before.std() ** 0.9)
    for _ in range(60):
        text.keep_tokens_in_scale()
    assert abs(float(vectors.std()) - 1.0) < 0.01
    assert torch.nn.functional.cosine_similarity(vectors.detach().flatten(), before.flatten(), dim=0) > 0.9999
