"""Stable Diffusion at the paper scale: the img2img and inpainting edits, and PhotoGuard's diffusion attack.

Weights come from a user's local diffusers folders (SD v1.5 for img2img, SD-inpainting), loaded with
``local_files_only`` — never downloaded. The code runs on current ``diffusers`` (PhotoGuard pinned
0.10.2, whose img2img took ``init_image=``); the tests run it offline on a tiny random-weight
pipeline built from configs.

Edits (``EDITORS``), PhotoGuard's demo settings as defaults (MadryLab/photoguard @ 686bea7):

- ``sd-img2img``: "dog under heavy rain and muddy ground real", seed 9222, strength 0.5,
  guidance 7.5, 50 steps (``demo_simple_attack_img2img``).
- ``sd-inpaint``: "two men in the plane hugging", seed 9209, strength 0.7, guidance 7.5, 100 steps,
  eta 1 (``demo_simple_attack_inpainting``); the kept region is pasted back from the input, as
  PhotoGuard's ``recover_image`` does (it pastes the clean photo; here the input the editor got).
  A photo set's own prompts, when it has them, replace the default prompt.

Chosen here: the safety checker is not loaded (a false positive would blank an output and corrupt
the metrics), and every photo draws its noise from its own generator seeded with ``seed``, so the
clean photo and its immunized copy are edited with the same noise (PhotoGuard reseeds before each).

The diffusion attack (``IMMUNIZERS["diffusion"]``; ``demo_complex_attack_inpainting``): PGD on
‖f(x + δ) − y‖₂, f the edit run differentiably for ``denoise_steps`` = 4 denoising steps from fresh
noise (inpainting) or from the noised photo (img2img, ``strength``), y the zero image of [−1, 1]
(grey here) or a target photo; the gradient summed over ``grad_reps`` = 10 draws of the noise, only
outside the repainted region. PhotoGuard: L2 ε 16, step 1 on [−1, 1] (→ 8 and 0.5 on [0, 1]), 200
iterations, constant step, no random start, prompt "", guidance 7.5, eta 1; its L∞ variant ε 0.1,
step 0.006. The notebook asks for a GPU with ≥ 40 GB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from poisonlab.attacks import pgd
from poisonlab.editing.edits import EDITORS, Editor
from poisonlab.editing.immunize import IMMUNIZERS, MASK_FILL, Immunizer, check_budget, masked_input
from poisonlab.registry import ConfigError

KINDS = ("img2img", "inpaint")
IMG2IMG_PROMPT = "dog under heavy rain and muddy ground real"
INPAINT_PROMPT = "two men in the plane hugging"


@dataclass
class SDModel:
    """A diffusers Stable Diffusion pipeline and which edit it makes (``img2img`` or ``inpaint``)."""

    pipe: object
    kind: str
    path: str  # the folder it was loaded from: its vae/ is the ``sd-vae`` autoencoder progress is measured in
    name: str = "sd"

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device


def load_sd(path: str, kind: str, *, dtype: str = "float32", device: str = "cpu") -> SDModel:
    """The ``kind`` pipeline from the local diffusers folder ``path`` (offline; no safety checker)."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    if kind not in KINDS:
        raise ConfigError(f"Stable Diffusion kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if not Path(path).is_dir():
        raise ConfigError(f"Stable Diffusion ({kind}): path {path} must be a local diffusers folder "
                          "(stable-diffusion-v1-5 for img2img, stable-diffusion-inpainting for inpaint); "
                          "nothing is downloaded")
    cls = StableDiffusionImg2ImgPipeline if kind == "img2img" else StableDiffusionInpaintPipeline
    pipe = cls.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype),
                               safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return SDModel(pipe.to(device), kind, str(path))


# ---------------------------------------------------------------- edits


def sd_edit(model: SDModel, images: torch.Tensor, *, masks: torch.Tensor | None, prompts: Sequence[str],
            seed: int, strength: float, guidance_scale: float, steps: int, eta: float) -> torch.Tensor:
    """Edit each photo with its prompt; the same seeded noise for a photo whatever its pixels."""
    pipe, outputs = model.pipe, []
    for i, image in enumerate(images):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        call = dict(prompt=prompts[i], image=image[None], strength=strength, guidance_scale=guidance_scale,
                    num_inference_steps=steps, generator=generator, output_type="pt", height=image.shape[1],
                    width=image.shape[2])
        if model.kind == "inpaint":
            if masks is None:
                raise ConfigError("editor 'sd-inpaint' needs masks: a photo set with masks/ (True = repaint)")
            call.update(mask_image=masks[i][None].float(), eta=eta)
        else:
            call.pop("height"), call.pop("width")  # img2img takes its size from the image
        edited = pipe(**call).images.to(images.device, torch.float32)
        if masks is not None:
            edited = torch.where(masks[i][None], edited, image[None])  # keep what the edit was not asked to repaint
        outputs.append(edited)
    return torch.cat(outputs)


def _sd_editor(kind: str, default_prompt: str, **defaults):
    def build(*, path: str | None = None, seed: int = defaults["seed"], strength: float = defaults["strength"],
              guidance_scale: float = 7.5, steps: int = defaults["steps"], eta: float = defaults["eta"],
              prompt: str | None = None, dtype: str = "float32", device: str = "cpu",
              model: SDModel | None = None) -> Editor:
        if model is None and path is None:
            raise ConfigError(f"editor 'sd-{kind}' needs option path: a local diffusers folder of SD weights")
        sd = model or load_sd(path, kind, dtype=dtype, device=device)

        def apply(images, *, masks=None, prompts=None):
            chosen = [prompt or default_prompt] * len(images) if prompt or prompts is None else list(prompts)
            return sd_edit(sd, images, masks=masks, prompts=chosen, seed=seed, strength=strength,
                           guidance_scale=guidance_scale, steps=steps, eta=eta)

        return Editor(apply=apply, name=f"sd-{kind}")

    build.__doc__ = f"Stable Diffusion {kind} from the folder ``path`` (or an already loaded ``model``)."
    return build


EDITORS.register("sd-img2img")(_sd_editor("img2img", IMG2IMG_PROMPT, seed=9222, strength=0.5, steps=50, eta=0.0))
EDITORS.register("sd-inpaint")(_sd_editor("inpaint", INPAINT_PROMPT, seed=9209, strength=0.7, steps=100, eta=1.0))


# ---------------------------------------------------------------- the differentiable edit


def _text_embeddings(pipe, prompt: str, count: int, guidance_scale: float) -> torch.Tensor:
    """[unconditional; conditional] prompt embeddings for ``count`` images, detached (only pixels are attacked)."""
    positive, negative = pipe.encode_prompt(prompt, pipe.unet.device, count, guidance_scale > 1)
    return (torch.cat([negative, positive]) if guidance_scale > 1 else positive).detach()


def denoise_forward(model: SDModel, images: torch.Tensor, *, masks: torch.Tensor | None, prompt: str = "",
                    steps: int = 4, guidance_scale: float = 7.5, eta: float = 1.0, strength: float = 0.7,
                    generator: torch.Generator) -> torch.Tensor:
    """The edit of ``images`` ([0, 1]) through ``steps`` denoising steps, differentiable in the pixels."""
    pipe = model.pipe
    vae, unet, scheduler = pipe.vae, pipe.unet, pipe.scheduler
    device, dtype = unet.device, unet.dtype
    scale = vae.config.scaling_factor
    n, _, height, width = images.shape
    factor = pipe.vae_scale_factor
    embeddings = _text_embeddings(pipe, prompt, n, guidance_scale)
    scheduler.set_timesteps(steps, device=device)
    extra = pipe.prepare_extra_step_kwargs(generator, eta)

    def noise(shape):
        return torch.randn(shape, generator=generator, device=generator.device).to(device, dtype)

    latent_shape = (n, unet.config.out_channels, height // factor, width // factor)
    if model.kind == "inpaint":
        if masks is None:
            raise ValueError("the inpainting diffusion attack needs masks (True = repaint)")
        timesteps = scheduler.timesteps
        latents = noise(latent_shape) * scheduler.init_noise_sigma
        masked = masked_input(images, masks).to(dtype) * 2 - 1
        condition = (F.interpolate(masks.to(dtype), size=latent_shape[2:]),
                     vae.encode(masked).latent_dist.sample(generator) * scale)
    else:
        timesteps, _ = pipe.get_timesteps(steps, strength, device)
        start = vae.encode(images.to(dtype) * 2 - 1).latent_dist.sample(generator) * scale
        latents = scheduler.add_noise(start, noise(latent_shape), timesteps[:1].repeat(n))
        condition = None
    for t in timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guidance_scale > 1 else latents, t)
        if condition is not None:  # the 9-channel inpainting UNet: latents, mask, masked-image latents
            pairs = 2 if guidance_scale > 1 else 1
            model_input = torch.cat([model_input, *(c.repeat(pairs, 1, 1, 1) for c in condition)], dim=1)
        predicted = unet(model_input, t, encoder_hidden_states=embeddings).sample
        if guidance_scale > 1:
            unconditional, conditional = predicted.chunk(2)
            predicted = unconditional + guidance_scale * (conditional - unconditional)
        latents = scheduler.step(predicted, t, latents, **extra).prev_sample
    return (vae.decode(latents / scale).sample.float() / 2 + 0.5)


@IMMUNIZERS.register("diffusion")
def diffusion_attack(*, norm: str = "l2", epsilon: float = 8.0, step_size: float = 0.5, steps: int = 200,
                     grad_reps: int = 10, denoise_steps: int = 4, guidance_scale: float = 7.5, eta: float = 1.0,
                     strength: float = 0.7, prompt: str = "", target: str = "zero") -> Immunizer:
    """PhotoGuard's diffusion attack (defaults: its L2 run, on [0, 1] units) against an ``SDModel``."""
    check_budget("diffusion", epsilon, step_size, steps)
    if norm not in ("l2", "linf") or target not in ("zero", "image"):
        raise ConfigError(f"immunizer 'diffusion': norm must be l2 or linf and target zero or image; "
                          f"got {norm!r}, {target!r}")

    def apply(model: SDModel, images: torch.Tensor, *, targets: torch.Tensor | None = None,
              masks: torch.Tensor | None = None, generator: torch.Generator) -> torch.Tensor:
        goal = torch.full_like(images, MASK_FILL) if target == "zero" else targets
        if goal is None:
            raise ValueError("immunizer 'diffusion' with target 'image' needs target photos")

        def loss(perturbed: torch.Tensor) -> torch.Tensor:
            edited = denoise_forward(model, perturbed, masks=masks, prompt=prompt, steps=denoise_steps,
                                     guidance_scale=guidance_scale, eta=eta, strength=strength, generator=generator)
            return (edited - goal).flatten(1).norm(dim=1)

        keep = None if masks is None else ~masks
        delta = pgd(loss, images, norm=norm, epsilon=epsilon, step_size=step_size, steps=steps, minimize=True,
                    start="zero", mask=keep, box=(0.0, 1.0), eot_samples=grad_reps)
        return images + delta

    return Immunizer(apply=apply, needs="pipeline", targeted=target == "image")
