"""Pure-NumPy metrics of verification: classification accuracy, output comparison, input distribution."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.errors import ModelError


def softmax_like(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] >= 2


def classification_metrics(scores: np.ndarray, y_true: np.ndarray, num_classes: int, top_k: int = 3
                           ) -> dict[str, Any]:
    """Top-1 / top-k accuracy, per-class accuracy and the confusion matrix (rows = true, columns = predicted)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(y_true), -1)
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    pred = np.argmax(scores, axis=1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, np.clip(pred, 0, num_classes - 1)), 1)
    per_class = []
    for k in range(num_classes):
        total = int(cm[k].sum())
        per_class.append(float(cm[k, k] / total) if total else None)
    top = {}
    for k in sorted({top_k, 5} if top_k < 5 else {top_k}):
        if 1 < k < num_classes:
            topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            top[str(k)] = float(np.mean(np.any(topk == y_true[:, None], axis=1)))
    onehot = np.eye(num_classes)[y_true]
    diff = scores - onehot
    return {
        "accuracy": float(np.mean(pred == y_true)),
        "top_k_accuracy": top,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "vs_ground_truth": {"rmse": float(np.sqrt(np.mean(diff ** 2))), "mae": float(np.mean(np.abs(diff)))},
    }


def compare_outputs(candidate: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Candidate vs reference outputs (both float, same shape)."""
    c = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if c.shape != r.shape:
        raise ModelError("candidate and reference outputs have different shapes",
                         received=f"{c.shape} vs {r.shape}")
    d = c - r
    err = float(np.sum(d ** 2))
    sig = float(np.sum(r ** 2))
    norm_c, norm_r = float(np.linalg.norm(c)), float(np.linalg.norm(r))
    return {
        "agreement": float(np.mean(np.argmax(c, axis=1) == np.argmax(r, axis=1))) if c.shape[1] > 1 else None,
        "rmse": float(np.sqrt(np.mean(d ** 2))),
        "mae": float(np.mean(np.abs(d))),
        "max_abs_error": float(np.max(np.abs(d))) if d.size else 0.0,
        "l2r": float(np.sqrt(err) / norm_r) if norm_r > 0 else None,
        "cosine": float(np.sum(c * r) / (norm_c * norm_r)) if norm_c > 0 and norm_r > 0 else None,
        "sqnr_db": float(10.0 * np.log10(sig / err)) if err > 0 and sig > 0 else None,
    }

