"""jpeg-photoguard's library: photos, JPEG sweep, PhotoGuard's attacks, autoencoders, SD edits (offline)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.attacks import pgd
from poisonlab.editing import (AUTOENCODERS, EDITORS, IMMUNIZERS, PHOTOSETS, PhotoSet, build_autoencoder,
                               build_editor, build_immunizer, build_photos, cell_metrics, immunize_photos,
                               jpeg_photos, jpeg_sweep)
from poisonlab.editing import diffusion, small_ae
from poisonlab.editing.autoencoders import LatentAutoencoder
from poisonlab.editing.immunize import photoguard_schedule
from poisonlab.editing.purify import jpeg
from poisonlab.image_quality import psnr
from poisonlab.registry import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TAEF2 = ROOT.parent / "shared" / "data" / "taef2"
needs_taef2 = pytest.mark.skipif(not TAEF2.is_dir(), reason=f"TAEF2 weights not at {TAEF2}")


class ToyEncoder(LatentAutoencoder):
    """A fixed random ×8 conv encoder and a transposed decoder: an attack target in milliseconds."""

    name = "toy"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Tanh(), nn.Conv2d(8, 4, 2, stride=2))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(4, 3, 8, stride=8), nn.Sigmoid())
        self.frozen()

    def encode(self, images):
        return self.encoder(images)

    def decode(self, latents):
        return self.decoder(latents)


@pytest.fixture(scope="module")
def photos() -> PhotoSet:
    return build_photos("skimage-photos", count=3, size=32)


def test_registries_hold_the_papers_names():
    assert AUTOENCODERS.names() == ["sd-vae", "small-ae", "taef2"]
    assert IMMUNIZERS.names() == ["diffusion", "encoder", "encoder-zero", "none"]
    assert EDITORS.names() == ["roundtrip", "sd-img2img", "sd-inpaint"]
    assert PHOTOSETS.names() == ["folder", "skimage-photos"]
    with pytest.raises(ConfigError, match="unknown immunizer 'pgd'"):
        build_immunizer("pgd")


# ---------------------------------------------------------------- photos


def test_skimage_photos_are_png_sources_with_licences_and_survive_a_save(photos, tmp_path):
    assert photos.images.shape == (3, 32, 32, 3) and photos.images.dtype == np.uint8
    assert list(photos.names) == ["chelsea", "coffee", "motorcycle_left"]
    assert all(source["file"].endswith(".png") and source["licence"] for source in photos.meta["photos"].values())
    photos.save(tmp_path / "p.npz")
    loaded = PhotoSet.load(tmp_path / "p.npz")
    assert np.array_equal(loaded.images, photos.images) and loaded.meta == photos.meta and loaded.masks is None
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_photos("skimage-photos", size=30)


def test_a_users_folder_brings_masks_and_prompts(tmp_path):
    from PIL import Image

    (tmp_path / "masks").mkdir()
    for stem, colour in (("a", (200, 10, 10)), ("b", (10, 200, 10))):
        Image.new("RGB", (40, 24), colour).save(tmp_path / f"{stem}.png")
        mask = np.zeros((24, 40), np.uint8)
        mask[:, 20:] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "prompts.yaml").write_text("a: a red wall\nb: a green field\n")
    folder = build_photos("folder", path=str(tmp_path), size=16)
    assert folder.images.shape == (2, 16, 16, 3) and list(folder.prompts) == ["a red wall", "a green field"]
    assert folder.masks[:, :, 10:].all() and not folder.masks[:, :, :6].any()
    (tmp_path / "prompts.yaml").write_text("a: only one\n")
    with pytest.raises(ConfigError, match="lacks a prompt for b"):
        build_photos("folder", path=str(tmp_path), size=16)


# ---------------------------------------------------------------- JPEG through the jpeg-<q> sanitizer


def test_jpeg_at_100_is_near_identity_and_lower_quality_loses_more(photos):
    clean = photos.tensor()
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    at_100 = jpeg(clean, 100)
    # Near-identity in luma; the 4:2:0 chroma subsampling libjpeg applies at every quality costs these
    # small, colourful photos some colour detail even at q100 (measured 28-38 dB in RGB at 32 px).
    assert psnr((at_100 * luma).sum(1, keepdim=True), (clean * luma).sum(1, keepdim=True)).min() > 40
    assert psnr(at_100, clean).min() > 25
    quality_psnr = [psnr(jpeg(clean, q), clean).mean().item() for q in (100, 95, 75, 50, 25, 10)]
    assert all(a > b for a, b in zip(quality_psnr, quality_psnr[1:])), quality_psnr
    compressed = jpeg_photos(photos, 50)
    assert compressed.meta["jpeg_quality"] == 50 and compressed.images.dtype == np.uint8
    with pytest.raises(ConfigError, match="1..100"):
        jpeg_photos(photos, 0)


# ---------------------------------------------------------------- PhotoGuard's encoder attack


def test_a_callable_step_size_is_the_step_of_each_iteration():
    x = torch.full((1, 4), 0.5)
    used = []
    delta = pgd(lambda z: z.sum(), x, epsilon=1.0, step_size=lambda i: used.append(i) or 0.1 * (i + 1), steps=3)
    assert used == [0, 1, 2] and torch.allclose(delta, torch.full((1, 4), 0.5))  # 0.1 + 0.2 + 0.3, then the box
    schedule = photoguard_schedule(0.02, 1000)
    assert schedule(0) == 0.02 and math.isclose(schedule(999), 0.02 / 100 + 0.99 * 0.02 / 1000)


@pytest.mark.parametrize("name", ["encoder", "encoder-zero"])
def test_the_encoder_attack_keeps_its_budget_and_box_lowers_its_loss_and_is_seeded(photos, name):
    model, epsilon = ToyEncoder(), 8 / 255
    attack = build_immunizer(name, epsilon=epsilon, step_size=epsilon / 4, steps=20)
    clean = photos.tensor()
    targets = clean.roll(-1, 0) if attack.targeted else None
    goal = model.encode(targets) if targets is not None else torch.zeros_like(model.encode(clean))

    def distance(images):
        return (model.encode(images) - goal).flatten(1).norm(dim=1)

    runs = [attack.apply(model, clean, targets=targets, generator=torch.Generator().manual_seed(seed))
            for seed in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    immunized = runs[0]
    assert (immunized - clean).abs().max() <= epsilon + 1e-6
    assert immunized.min() >= 0 and immunized.max() <= 1
    assert (distance(immunized) < distance(clean)).all()


def test_the_inpainting_variant_leaves_the_repainted_region_alone(photos):
    masks = torch.zeros(len(photos), 32, 32, dtype=torch.bool)
    masks[:, 8:24, 4:20] = True
    masked = PhotoSet(photos.images, photos.names, masks=masks.numpy(), meta=photos.meta)
    immunized = immunize_photos(masked, "encoder", ToyEncoder(), options={"epsilon": 16 / 255, "step_size": 4 / 255,
                                                                          "steps": 5})
    region = masks.numpy()
    assert np.array_equal(immunized.images[region], photos.images[region])
    assert not np.array_equal(immunized.images[~region], photos.images[~region])
    assert immunized.meta["immunizer"] == "encoder" and immunized.meta["target"] == "next photo"


def test_progress_is_zero_on_the_clean_photo_and_one_at_the_target(photos):
    model, clean = ToyEncoder(), photos.tensor()
    targets = clean.roll(-1, 0)
    editor = build_editor("roundtrip", model)
    at_clean = cell_metrics(model, editor, clean=clean, immunized=targets, purified=clean, purified_clean=clean,
                            targets=targets)
    assert np.allclose(at_clean["progress"], 0) and np.allclose(at_clean["progress_immunized"], 1, atol=1e-6)
    assert np.allclose(at_clean["retained"], 0) and at_clean["input_psnr"] == [100.0] * 3


def test_the_sweep_gives_every_cell_its_clean_control(photos):
    model = ToyEncoder()
    rows = {"encoder-eps8": ("encoder", {"epsilon": 8 / 255, "step_size": 2 / 255, "steps": 5})}
    records, sets = jpeg_sweep(photos, model, build_editor("roundtrip", model), rows, qualities=(95, 50))
    assert [(r["row"], r["jpeg_quality"]) for r in records] == [("encoder-eps8", q) for q in ("none", 95, 50)]
    assert records[0]["retained"] == pytest.approx(1) and records[0]["progress_control"] == pytest.approx(0)
    assert all(len(r["per_photo"]["progress_control"]) == 3 for r in records)
    assert set(sets) == {(row, q) for row in ("none", "encoder-eps8") for q in ("none", 95, 50)}


# ---------------------------------------------------------------- autoencoders


def test_the_taef2_loader_refuses_a_missing_file_or_a_wrong_checksum(tmp_path):
    with pytest.raises(ConfigError, match=r"taef2_encoder.pth does not exist; TAEF2 weights come from "
                                          r"github.com/madebyollin/taesd @ 5cccb12"):
        build_autoencoder("taef2", path=str(tmp_path))
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        (tmp_path / name).write_bytes(b"not the weights")
    with pytest.raises(ConfigError, match=r"wrong sha256 .* TAEF2 weights come from github.com/madebyollin/taesd"):
        build_autoencoder("taef2", path=str(tmp_path))


@needs_taef2
def test_taef2_round_trips_a_real_photo():
    model = build_autoencoder("taef2", path=str(TAEF2))
    photo = build_photos("skimage-photos", count=1, size=64).tensor()
    latent = model.encode(photo)
    assert latent.shape == (1, 32, 8, 8)
    assert psnr(model.decode(latent), photo).item() > 22  # measured 26.8 dB on chelsea at 64 px


def test_small_ae_training_resumes_after_a_kill_into_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    options = dict(steps=4, steps_per_epoch=2, batch_size=2, crop=8, pool_size=16, precision="fp32", device="cpu")
    whole = small_ae.train_small_autoencoder(tmp_path / "whole", **options)
    crops, calls = small_ae.random_crops, []

    def dies_in_the_second_epoch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return crops(*args)

    monkeypatch.setattr(small_ae, "random_crops", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        small_ae.train_small_autoencoder(tmp_path / "killed", **options)
    killed_run = (tmp_path / "killed" / "run_key").read_text()
    monkeypatch.setattr(small_ae, "random_crops", crops)
    resumed = small_ae.train_small_autoencoder(tmp_path / "killed", **options)
    assert resumed["run_key"] == killed_run and len(resumed["history"]) == 2
    assert resumed["history"][1]["train_mse"] == whole["history"][1]["train_mse"]
    weights = [torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("whole", "killed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text())["autoencoder"] == "small-ae"
    assert build_autoencoder("small-ae", path=str(tmp_path / "whole" / "model.pt")).encode(
        torch.rand(1, 3, 16, 16)).shape == (1, 4, 2, 2)


# ---------------------------------------------------------------- Stable Diffusion, offline, tiny random weights


def tiny_pipeline(kind: str, folder: Path) -> Path:
    """A random-weight SD pipeline built from configs (no download) and saved as a diffusers folder."""
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8,
                                in_channels=9 if kind == "inpaint" else 4, out_channels=4, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16,
                                                intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                                vocab_size=64, max_position_embeddings=77))
    # A character-level CLIP vocabulary written here: the usual tiny tokenizer is a download.
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter], vocab[f"{letter}</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    cls = StableDiffusionInpaintPipeline if kind == "inpaint" else StableDiffusionImg2ImgPipeline
    pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


@pytest.fixture(scope="module")
def sd_models(tmp_path_factory) -> dict[str, diffusion.SDModel]:
    folder = tmp_path_factory.mktemp("sd")
    return {kind: diffusion.load_sd(str(tiny_pipeline(kind, folder)), kind) for kind in diffusion.KINDS}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_sd_edits_run_offline_and_inpainting_keeps_the_unmasked_region(sd_models, offline):
    images = build_photos("skimage-photos", count=2, size=16).tensor()
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 4:12, 4:12] = True
    img2img = build_editor("sd-img2img", model=sd_models["img2img"], steps=2)
    edited = img2img.apply(images)
    assert edited.shape == images.shape and 0 <= edited.min() and edited.max() <= 1
    assert torch.equal(edited, img2img.apply(images))  # the seed fixes the noise
    inpaint = build_editor("sd-inpaint", model=sd_models["inpaint"], steps=2)
    repainted = inpaint.apply(images, masks=masks)
    assert torch.equal(repainted[~masks.expand_as(images)], images[~masks.expand_as(images)])
    assert not torch.equal(repainted[masks.expand_as(images)], images[masks.expand_as(images)])
    with pytest.raises(ConfigError, match="local diffusers folder"):
        diffusion.load_sd("/no/such/folder", "img2img")
    vae = build_autoencoder("sd-vae", path=sd_models["img2img"].path)  # the pipeline folder's vae/
    assert vae.encode(images).shape == (2, 4, 8, 8) and vae.decode(vae.encode(images)).shape == images.shape


@pytest.mark.parametrize("kind", diffusion.KINDS)
def test_the_diffusion_attack_takes_gradients_through_denoising_to_the_pixels(sd_models, offline, kind):
    model = sd_models[kind]
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = None
    if kind == "inpaint":
        masks = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
        masks[:, :, 8:, :] = True
    pixels = images.clone().requires_grad_(True)
    diffusion.denoise_forward(model, pixels, masks=masks, steps=2, generator=torch.Generator().manual_seed(0)
                              ).square().sum().backward()
    keep = torch.ones_like(images, dtype=torch.bool) if masks is None else ~masks.expand_as(images)
    assert pixels.grad[keep].abs().sum() > 0
    attack = build_immunizer("diffusion", epsilon=0.5, step_size=0.25, steps=2, grad_reps=1, denoise_steps=2)
    immunized = attack.apply(model, images, masks=masks, generator=torch.Generator().manual_seed(0))
    delta = immunized - images
    assert delta.flatten(1).norm(dim=1).max() <= 0.5 + 1e-5 and delta[keep].abs().sum() > 0
    assert 0 <= immunized.min() and immunized.max() <= 1
    if masks is not None:
        assert torch.equal(immunized[~keep], images[~keep])
