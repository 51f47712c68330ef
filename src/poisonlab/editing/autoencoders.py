"""Latent autoencoders the encoder attack targets and the round-trip edit runs through.

Every entry of ``AUTOENCODERS`` builds a frozen ``LatentAutoencoder``: ``encode`` maps images in
[0, 1] to the latent an editor starts from (its mean, for a VAE: PhotoGuard attacks
``latent_dist.mean``), ``decode`` maps a latent back to [0, 1]. Three kinds:

- ``taef2``: TAEF2, the tiny distilled autoencoder of the FLUX.2 VAE's latent space (32 channels,
  ×8 downsampling; madebyollin/taesd @ 5cccb12, MIT). A real pretrained latent autoencoder that is
  *not* SD-1.5's VAE. The module is written here from the state dict's layout (``_taef2_encoder``,
  ``_taef2_decoder``); the weights are read from a folder, sha256-checked, with
  ``torch.load(weights_only=True)`` and strict keys. Images in and out are in [0, 1], as the
  taesd README and its ``main()`` use them.
- ``sd-vae``: Stable Diffusion's ``AutoencoderKL`` through ``diffusers`` from a local folder (a
  pipeline folder with ``vae/`` or the VAE folder itself), ``local_files_only``: never a download.
  Inputs are mapped to [−1, 1] as SD expects; the latent is unscaled (no 0.18215), as PhotoGuard's
  targets are.
- ``small-ae``: the in-pipeline stand-in (``editing.small_ae``) for a fresh machine with neither.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from poisonlab.data.base import sha256_of
from poisonlab.registry import ConfigError, Registry

# The checked files: name → sha256 (``../shared/data/README.md``;
# madebyollin/taesd @ 5cccb12dc72074a4be35680c3b108548a7c69978).
TAEF2_FILES = {
    "taef2_encoder.pth": "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    "taef2_decoder.pth": "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
}
TAEF2_SOURCE = ("TAEF2 weights come from github.com/madebyollin/taesd @ 5cccb12dc72074a4be35680c3b108548a7c69978 "
                "(taef2_encoder.pth, taef2_decoder.pth, MIT); in this project ../shared/data/taef2/")


class LatentAutoencoder(nn.Module):
    """``encode``: [0, 1] images → latent; ``decode``: latent → [0, 1] images. Frozen, in eval mode."""

    name = "autoencoder"
    downsample = 8

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def frozen(self) -> LatentAutoencoder:
        # The attack asks autograd for the input's gradient only; frozen weights keep it from building theirs.
        self.eval().requires_grad_(False)
        return self


AUTOENCODERS: Registry[Callable[..., LatentAutoencoder]] = Registry("autoencoder")


def build_autoencoder(name: str, **options) -> LatentAutoencoder:
    return AUTOENCODERS.build(name, **options)


# ---------------------------------------------------------------- TAEF2


class _Block(nn.Sequential):
    """A residual block of three 3×3 convs: relu(conv(x) + x); with ``global_norm`` the input first
    gets x + pool(x), a 1×1 → GroupNorm(4) → ReLU → 1×1 branch (the flux_2 variant's mid-blocks).
    Children are named as the state dict names them (``conv.0``, ``conv.2``, ``conv.4``, ``pool.*``)."""

    def __init__(self, width: int = 64, global_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(width, width), nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, width))
        self.pool = nn.Sequential(nn.Conv2d(width, 4 * width, 1, bias=False), nn.GroupNorm(4, 4 * width),
                                  nn.ReLU(), nn.Conv2d(4 * width, width, 1, bias=False)) if global_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


class _SoftClamp(nn.Module):
    """3·tanh(x / 3): the decoder's first layer keeps latents within ±3 smoothly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


def _taef2_encoder(latent_channels: int = 32) -> nn.Sequential:
    """Indices 0–14 of ``taef2_encoder.pth``: a stem, then three stride-2 convs (×8) each followed by
    three blocks, the last three with the global-norm branch, then a conv to the latent."""
    def down() -> nn.Conv2d:
        return _conv(64, 64, stride=2, bias=False)

    return nn.Sequential(_conv(3, 64), _Block(), down(), _Block(), _Block(), _Block(), down(), _Block(), _Block(),
                         _Block(), down(), *(_Block(global_norm=True) for _ in range(3)), _conv(64, latent_channels))


def _taef2_decoder(latent_channels: int = 32) -> nn.Sequential:
    """Indices 0–19 of ``taef2_decoder.pth``: soft clamp, conv, three global-norm blocks, then three
    upsample ×2 → conv stages (three, three and one block), then a conv to RGB."""
    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]

    return nn.Sequential(_SoftClamp(), _conv(latent_channels, 64), nn.ReLU(),
                         *(_Block(global_norm=True) for _ in range(3)), *up(), _Block(), _Block(), _Block(),
                         *up(), _Block(), _Block(), _Block(), *up(), _Block(), _conv(64, 3))


class TAEF2(LatentAutoencoder):
    name = "taef2"

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = _taef2_encoder(), _taef2_decoder()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents).clamp(0, 1)


@AUTOENCODERS.register("taef2")
def taef2(*, path: str) -> LatentAutoencoder:
    """TAEF2 from the folder ``path`` holding ``taef2_encoder.pth`` and ``taef2_decoder.pth``."""
    model = TAEF2()
    for part, (file, expected) in zip((model.encoder, model.decoder), TAEF2_FILES.items()):
        weights = Path(path) / file
        if not weights.is_file():
            raise ConfigError(f"autoencoder 'taef2': {weights} does not exist; {TAEF2_SOURCE}")
        if sha256_of(weights) != expected:
            raise ConfigError(f"autoencoder 'taef2': {weights} has the wrong sha256 (expected {expected}); "
                              f"{TAEF2_SOURCE}")
        # The files hold fp16; loading copies them into this module's fp32 parameters.
        part.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.frozen()


# ---------------------------------------------------------------- Stable Diffusion's VAE


class DiffusersVAE(LatentAutoencoder):
    name = "sd-vae"

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    # In the VAE's dtype (fp16 at the paper scale, as PhotoGuard ran it), out in float32.
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode((images * 2 - 1).to(self.vae.dtype)).latent_dist.mean.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return (self.vae.decode(latents.to(self.vae.dtype)).sample.float() / 2 + 0.5).clamp(0, 1)


@AUTOENCODERS.register("sd-vae")
def sd_vae(*, path: str, dtype: str = "float32") -> LatentAutoencoder:
    """``AutoencoderKL`` from ``path`` (a diffusers pipeline folder with ``vae/``, or a VAE folder), offline."""
    from diffusers import AutoencoderKL

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"autoencoder 'sd-vae': path {path} must be a local diffusers folder (e.g. "
                          "stable-diffusion-v1-5 with vae/); nothing is downloaded")
    subfolder = "vae" if (root / "vae").is_dir() else None
    vae = AutoencoderKL.from_pretrained(root, subfolder=subfolder, local_files_only=True,
                                        dtype=getattr(torch, dtype))
    return DiffusersVAE(vae).frozen()
