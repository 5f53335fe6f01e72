"""Video anomaly detection: a conditional frame diffusion model served by Triton as ``video_diffusion``.

- ``frames``: one grayscale/resize conversion shared by training, evaluation and ingestion; causal windows.
- ``network``: a small conditional U-Net (half-resolution grid via pixel unshuffle; residual on the last frame).
- ``diffusion``: cosine schedule, x0-prediction training loss, few-step DDIM forecast from seeded noise, patch
  scores; the identity-shortcut guard and the batch-independent noise are explained there.
- ``train``: the training loop and the label-free threshold; ``repository``: the Triton model directory;
  ``triton_model``: the python-backend adapter; ``evaluation``: AUROC/AUPRC/EER and plots.

Resolution: 144x96 keeps Ped2's 3:2 aspect (a walker is ~18 pixels tall). Measured on one core: a training step
costs ~0.4 s at batch 16 (0.42 s at 96x64 and batch 32), a scored frame ~39 ms (4 DDIM steps; 16 ms at 96x64).
On Ped2 the same 3000-step training at 96x64 ranked frames no better than frame differencing (pooled AUROC 0.899
against 0.906): at that size a far-away bike is 2-3 pixels and its look is lost; 144x96 with the same physical
patch (1/12 of the width) reached 0.927 against 0.920 in a first run. A full-resolution first level cost 3 s per step.
"""
