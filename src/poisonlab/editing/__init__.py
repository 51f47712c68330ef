"""jpeg-photoguard's editing stages: photos → immunize → JPEG → edit → metrics (DESIGN.md, Data flow).

Registries (config names, wildcards and table rows): ``PHOTOSETS`` (skimage-photos, folder),
``AUTOENCODERS`` (taef2, sd-vae, small-ae), ``IMMUNIZERS`` (none, encoder, encoder-zero, diffusion),
``EDITORS`` (roundtrip, sd-img2img, sd-inpaint). Importing the package fills them; ``diffusion``
imports ``diffusers`` only when a Stable Diffusion model is loaded.
"""

from poisonlab.editing import diffusion, small_ae  # noqa: F401  (their @register lines)
from poisonlab.editing.autoencoders import AUTOENCODERS, LatentAutoencoder, build_autoencoder
from poisonlab.editing.edits import EDITORS, Editor, build_editor
from poisonlab.editing.immunize import IMMUNIZERS, Immunizer, build_immunizer, immunize_photos, target_photos
from poisonlab.editing.metrics import cell_metrics, summarize
from poisonlab.editing.photos import PHOTOSETS, PhotoSet, build_photos
from poisonlab.editing.purify import QUALITIES, jpeg_photos
from poisonlab.editing.sweep import jpeg_sweep

__all__ = ["AUTOENCODERS", "EDITORS", "IMMUNIZERS", "PHOTOSETS", "QUALITIES", "Editor", "Immunizer",
           "LatentAutoencoder", "PhotoSet", "build_autoencoder", "build_editor", "build_immunizer", "build_photos",
           "cell_metrics", "immunize_photos", "jpeg_photos", "jpeg_sweep", "summarize", "target_photos"]
