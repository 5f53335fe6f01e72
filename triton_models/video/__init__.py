"""Video anomaly detection: a conditional frame diffusion model served by Triton as ``video_diffusion``.

- ``frames``: one grayscale/resize conversion shared by training, evaluation and ingestion; causal windows.
- ``network``: a small conditional U-Net (half-resolution grid via pixel unshuffle; residual on the last frame).
- ``diffusion``: the network wired to the shared schedule, loss and DDIM sampler (``triton_models.diffusion``:
  clipped cosine, x0-prediction, few-step DDIM forecast from seeded noise), and patch scores; the identity-shortcut
  guard and the batch-independent noise are explained there.
- ``train``: the training loop, the label-free threshold and ``fit`` (train, select the scoring, calibrate, export;
  used by ``diffsentry train/evaluate video`` and the demo); ``repository``: the Triton model directory and its
  card (``triton_models.model_card.VideoCard``); ``triton_model``: the python-backend adapter; ``evaluation``:
  AUROC/AUPRC/EER, causal scoring of labelled test clips, and plots; ``leave_clips_out``: what the scores predict
  for clips nothing was tuned on (choices made on the other labelled clips, the anomalous-throughout and
  enters-mid-clip cases, the alert's ``for`` duration), run by ``benchmarks/video_leave_clips_out.py``.

Resolution: 144x96 keeps Ped2's 3:2 aspect (a walker is ~18 pixels tall). Measured on one core: a training step
costs ~0.4 s at batch 16 (0.42 s at 96x64 and batch 32), a scored frame ~39 ms (4 DDIM steps; 16 ms at 96x64).
On Ped2 the same 3000-step training at 96x64 ranked frames no better than frame differencing (pooled AUROC 0.899
against 0.906): at that size a far-away bike is 2-3 pixels and its look is lost; 144x96 with the same physical
patch (1/12 of the width) reached 0.927 against 0.920 in a first run. A full-resolution first level cost 3 s per step.
"""
