"""Analysis of trained models and the figures of the study (paper Figures 2-4, training curves).

    spectrum        Figure 2: FFT spectra of the HADES slot outputs (shared / expert / no bias)
    delta           Figure 4: histogram of Δ_HADES − Δ (the spectral bias' effect on Δ)
    passkey_figure  Figure 3: passkey retrieval heatmaps
    curves          training curves, parameter / throughput table
    style           colours, fonts and PNG+PDF output shared by every figure
    report_check    the Snakemake HTML report opens in headless chromium and shows every image

Everything here reads result files and checkpoints, never MLflow (docs/CONTRACTS.md).
"""
