"""Video anomaly detection: a conditional frame diffusion model served by Triton as ``video_diffusion``.

- ``frames``: one grayscale/resize conversion shared by training, evaluation and ingestion; causal windows.
- ``network``: a small conditional U-Net (half-resolution grid via pixel unshuffle; residual on the last frame).
- ``diffusion``: cosine schedule, x0-prediction training loss, few-step DDIM forecast from seeded noise, patch
  scores; the identity-shortcut guard and the batch-independent noise are explained there.
- ``train``: the training loop and the label-free threshold; ``repository``: the Triton model directory;
  ``triton_model``: the python-backend adapter; ``evaluation``: AUROC/AUPRC/EER and plots.

Resolution: 96x64 keeps Ped2's 3:2 aspect. Measured on one core: this network costs 0.42 s per training step
(batch 32) and 16 ms per scored frame (4 DDIM steps) at 96x64; at 144x96, even with 24 instead of 32 channels,
0.68 s and 42 ms (the Triton target of 25 frames/s on 2 shared cores rules the larger size out); a
full-resolution first level cost 3 s per step.
"""
