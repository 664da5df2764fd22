"""HADES reproduction: models, data, training, evaluation and analysis for the pipeline."""

__version__ = "0.1.0"
