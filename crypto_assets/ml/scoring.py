"""Batch scoring. Linear models are a scaler plus coefficients: scored with numpy from the
JSON exported at training time (no JVM, ~millions of rows/s). Tree models go through Spark."""

from __future__ import annotations

import numpy as np
import polars as pl


def score_linear(features: pl.DataFrame, coef: dict) -> np.ndarray:
    """Apply (x - mean) / std, then w·x + b; sigmoid for logistic models. Spark's StandardScaler
    leaves a zero-variance feature at 0, and so does this."""
    x = features.select(coef["features"]).fill_null(0.0).to_numpy().astype(np.float64)
    mean = np.asarray(coef["mean"])
    std = np.asarray(coef["std"])
    scaled = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1.0), 0.0)
    z = scaled @ np.asarray(coef["coefficients"]) + coef["intercept"]
    if coef["kind"] == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    return z
