"""Snakemake adapter: one immunizer row against the autoencoder (or, for the diffusion attack, the SD
pipeline of the row's ``sd`` folder) → the immunized photos, uint8."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.editing import PhotoSet, build_autoencoder, immunize_photos
from poisonlab.editing.diffusion import load_sd
from poisonlab.training.loop import pick_device

torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.params.device)
row, autoencoder = snakemake.params.row, snakemake.params.autoencoder
if "sd" in row:
    attacked = load_sd(**row["sd"], device=device)
else:
    attacked = build_autoencoder(autoencoder["name"], **autoencoder["options"]).to(device)
immunized = immunize_photos(PhotoSet.load(snakemake.input.photos), row["immunizer"], attacked,
                            options=row["options"], seed=int(snakemake.wildcards.seed), device=device)
immunized.save(snakemake.output.immunized)
