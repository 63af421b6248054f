"""FantasyTalking training: data preparation and the two-stage audio-visual alignment trainer.

Runs outside ComfyUI, from one CPU to many GPU nodes with the same code:

- ``python -m training.prepare --videos DIR --out DATASET``: talking videos -> per-clip tensors
  (VAE latents, text embeddings, wav2vec2 features, latent lip masks, face crop + embedding,
  motion intensities) and a manifest (``prepare.py``);
- ``torchrun --nproc_per_node N -m training.train --config CONFIG.yaml``: flow matching on Wan2.1
  I2V with the adapters attached, stage 1 global audio attention, stage 2 frame-level with the lip-masked
  loss, FSDP2 over ranks, resumable checkpoints (``train.py``);
- ``python -m training.export``: a checkpoint's trainable weights -> the adapter file the nodes load.

Nothing is imported here: ``import training`` stays cheap.
"""
