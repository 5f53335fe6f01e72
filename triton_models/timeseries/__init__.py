"""Time-series diffusion anomaly detection: conditional denoiser, scoring by imputation and reconstruction."""
