"""``small-ae``: a small autoencoder trained inside the pipeline, so the main job needs no weights.

A fresh machine has neither TAEF2 nor Stable Diffusion, so the embedded scale trains its own latent
autoencoder. It is a stand-in, and every table says so: it is *not* a pretrained latent-diffusion
autoencoder, its latent space is nobody's but its own, and it has seen the photos it is attacked on
(other crops and scales of them).

Choices (this project's, none from the paper):

- Geometry of SD's VAE: ×8 downsampling to 4 latent channels (a 64 px image → 4 × 8 × 8), so the
  encoder compresses as much as the one PhotoGuard attacks. Plain (not variational): the attack
  targets a VAE's mean, which a deterministic encoder is.
- Data: random crops (``crop`` px, flipped at random) of scikit-image's RGB PNG photos
  (``photos.SKIMAGE_PHOTOS``, all of them) resized to ``pool_size`` px — the MNIST-5k digits would
  teach it nothing about photos. Crops are gathered as one batched index, no per-image Python.
- Objective: mean squared error; Adam, learning rate ``lr`` with a cosine decay over ``steps``.

Training follows the project's runs (``training.run``): ``checkpoint.pt`` every ``steps_per_epoch``
steps (``training.loop.load_checkpoint`` discards one of another configuration), resumed into the
same MLflow run (``run_key`` beside it), precision from the hardware (``resolve_precision``,
``autocast``), and ``model.pt`` + ``metrics.json`` written last, atomically.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab import tracking
from poisonlab.atomic import torch_save, write_json
from poisonlab.editing.autoencoders import AUTOENCODERS, LatentAutoencoder
from poisonlab.editing.photos import SKIMAGE_PHOTOS, skimage_photos
from poisonlab.registry import ConfigError
from poisonlab.training import optim
from poisonlab.training.loop import autocast, load_checkpoint, pick_device
from poisonlab.training.precision import resolve_precision

WIDTH, LATENT_CHANNELS = 64, 4


class SmallAutoencoder(LatentAutoencoder):
    name = "small-ae"

    def __init__(self) -> None:
        super().__init__()
        relu = nn.ReLU()
        # Narrow at high resolution, wide at low: the full-resolution convolutions are what costs on a CPU.
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), relu,
            nn.Conv2d(32, WIDTH, 3, stride=2, padding=1), relu,
            nn.Conv2d(WIDTH, WIDTH, 3, stride=2, padding=1), relu,
            nn.Conv2d(WIDTH, LATENT_CHANNELS, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(LATENT_CHANNELS, WIDTH, 3, padding=1), relu,
            nn.Upsample(scale_factor=2), nn.Conv2d(WIDTH, WIDTH, 3, padding=1), relu,
            nn.Upsample(scale_factor=2), nn.Conv2d(WIDTH, 32, 3, padding=1), relu,
            nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1), relu,
            nn.Conv2d(16, 3, 3, padding=1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents).clamp(0, 1)


@AUTOENCODERS.register("small-ae")
def small_ae(*, path: str) -> LatentAutoencoder:
    """The small autoencoder trained by ``train_small_autoencoder``; ``path`` is its ``model.pt``."""
    if not Path(path).is_file():
        raise ConfigError(f"autoencoder 'small-ae': {path} does not exist; the pipeline trains it "
                          "(editing.small_ae.train_small_autoencoder) before any stage uses it")
    model = SmallAutoencoder()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.frozen()


def random_crops(pool: torch.Tensor, count: int, crop: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random ``crop`` × ``crop`` crops of the images ``pool`` (N, C, S, S), each flipped with p = ½."""
    n, channels, size, _ = pool.shape
    draw = {"generator": generator, "device": generator.device}
    which = torch.randint(n, (count,), **draw).to(pool.device)
    top, left = (torch.randint(size - crop + 1, (2, count), **draw)).to(pool.device)
    span = torch.arange(crop, device=pool.device)
    rows, cols = top[:, None] + span, left[:, None] + span
    flip = torch.rand(count, **draw).to(pool.device) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = (which[:, None, None, None], torch.arange(channels, device=pool.device)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :])
    return pool[index]


def train_small_autoencoder(run_dir: str | os.PathLike, *, steps: int = 800, steps_per_epoch: int = 100,
                            batch_size: int = 16, crop: int = 32, pool_size: int = 96, lr: float = 3e-3,
                            seed: int = 0, precision: str = "auto", device: str = "auto",
                            photos: list[str] | None = None) -> dict[str, Any]:
    """Train ``small-ae`` into ``run_dir`` (``model.pt``, ``metrics.json``); resume a killed attempt."""
    for option, value, low in (("steps", steps, 1), ("steps_per_epoch", steps_per_epoch, 1),
                               ("batch_size", batch_size, 1), ("crop", crop, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"small-ae training: {option} must be an integer >= {low}; got {value!r}")
    if crop % 8 or crop > pool_size:
        raise ConfigError(f"small-ae training: crop must be a multiple of 8 and at most pool_size; got {crop}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    torch_device = pick_device(device)
    resolved = resolve_precision(precision, torch_device)
    options = {"steps": steps, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "crop": crop,
               "pool_size": pool_size, "lr": lr, "seed": seed, "photos": photos or list(SKIMAGE_PHOTOS)}
    source = skimage_photos(names=options["photos"], size=pool_size)
    pool = torch.from_numpy(source.images).permute(0, 3, 1, 2).float().div(255).to(torch_device)
    fingerprint = {**options, "precision": resolved, "photos_sha256": source.meta["photos"]}

    torch.manual_seed(seed)  # initialisation; every crop after it draws from the generator
    model = SmallAutoencoder().to(torch_device)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    history: list[dict[str, float]] = []
    resumed_seconds = 0.0
    checkpoint = load_checkpoint(checkpoint_path, fingerprint)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        history, resumed_seconds = checkpoint["history"], checkpoint["wall_seconds"]

    tags = {**tracking.environment_tags(), "precision_resolved": resolved, "autoencoder": "small-ae"}
    started = time.perf_counter()
    with tracking.tracked_run(run_dir, resume=checkpoint is not None,
                              experiment=tracking.experiment_name("skimage-photos"), run_name=f"small-ae/seed{seed}",
                              params=options, tags=tags) as tracked:
        model.train()
        epochs = -(-steps // steps_per_epoch)
        for epoch in range(len(history) + 1, epochs + 1):
            epoch_started, loss_sum = time.perf_counter(), torch.zeros((), device=torch_device)
            count = min(steps_per_epoch, steps - (epoch - 1) * steps_per_epoch)
            for _ in range(count):
                x = random_crops(pool, batch_size, crop, generator)
                with autocast(torch_device, resolved):
                    loss = F.mse_loss(model.decoder(model.encoder(x)).float(), x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.detach()
            mse = loss_sum.item() / count
            row = {"epoch": epoch, "train_mse": mse, "train_psnr": -10 * math.log10(max(mse, 1e-12)),
                   "seconds": time.perf_counter() - epoch_started}
            history.append(row)
            torch_save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": schedule.state_dict(), "generator": generator.get_state(), "history": history,
                        "wall_seconds": resumed_seconds + time.perf_counter() - started}, checkpoint_path)
            tracked.log_epoch(row)
        record = {"autoencoder": "small-ae", **options, "precision": resolved, "history": history,
                  "final_train_psnr": history[-1]["train_psnr"],
                  "wall_seconds": resumed_seconds + time.perf_counter() - started, "device": str(torch_device),
                  "run_key": tracked.key, "git_commit": tags["git_commit"], "photos": source.meta}
        tracked.log_summary({"final_train_psnr": record["final_train_psnr"], "wall_seconds": record["wall_seconds"]})
        torch_save(model.state_dict(), run_dir / "model.pt")
        write_json(run_dir / "metrics.json", record)
    checkpoint_path.unlink()
    return record
