"""Evaluation metrics: PSNR/SSIM, ST-LPIPS, FVD (Kinetics-400 I3D), slot–entity DCI and edit locality."""
