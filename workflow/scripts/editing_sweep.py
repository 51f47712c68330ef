"""Snakemake adapter: one row's JPEG sweep (the jpeg-<q> sanitizer at every quality, the edit, the metrics;
the clean control for row none) → one record a purifier, each naming the inputs the figure redraws."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.atomic import write_json
from poisonlab.editing import PhotoSet, build_autoencoder, build_editor
from poisonlab.editing.sweep import row_records
from poisonlab.training.loop import pick_device

torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.params.device)
autoencoder, editor = snakemake.params.autoencoder, dict(snakemake.params.editor)
model = build_autoencoder(autoencoder["name"], **autoencoder["options"]).to(device)
name = editor.pop("name")
edit = build_editor(name, model) if name == "roundtrip" else build_editor(name, **editor)
immunized = snakemake.input.immunized
records = row_records(PhotoSet.load(snakemake.input.photos), PhotoSet.load(immunized) if immunized else None,
                      model, edit, row=snakemake.wildcards.immunizer, qualities=tuple(snakemake.params.qualities),
                      device=device)
inputs = {"photos": snakemake.input.photos, "immunized": immunized or snakemake.input.photos,
          "autoencoder": autoencoder}
for record in records:
    write_json(snakemake.output[record["purifier"]], {**record, "inputs": inputs})
