"""Accuracy through a variant's own path: a Predictor (inference.py) answers every image of a
split as it answers when timed, and the results.csv columns of that score."""
import gc

import numpy as np

from utils import KitError, progress


def evaluate(clf, imgs, labels, batch_size=500, batch1_check=500, desc=None):
    """Accuracy (%) of a Predictor on host images through its end-to-end call.

    Batch-1 paths (CUDA graph, torch.compile) answer image by image, exactly as timed.  Eager
    paths answer in batches (Predictor.predict: the same weights, dtype and layout); their first
    batch1_check images are answered again one by one and mismatches counted.
    Returns dict(acc, per_class, n, batch1_mismatch, batch1_checked)."""
    n = len(labels)
    if n == 0:
        raise KitError("the evaluation split holds no images (check data.val_size and the data file)")
    gc_on = gc.isenabled()
    gc.disable()  # tens of thousands of small calls: no collection pauses inside them
    try:
        if clf.batch1_only:
            preds = np.fromiter((clf(img) for img in progress(imgs, desc or f"eval {clf.variant}", "img")),
                                dtype=np.int64, count=n)
            checked = mismatch = 0
        else:
            preds = clf.predict(imgs, batch_size)
            checked = min(batch1_check, n)
            mismatch = sum(int(clf(imgs[i]) != preds[i]) for i in range(checked))
    finally:
        if gc_on:
            gc.enable()
    labels = np.asarray(labels)
    correct = preds == labels
    per_class = [100.0 * float(correct[labels == c].mean()) if (labels == c).any() else float("nan")
                 for c in range(10)]
    return {"acc": 100.0 * float(correct.mean()), "per_class": per_class, "n": n,
            "batch1_mismatch": mismatch, "batch1_checked": checked, "preds": preds}


def accuracy_fields(r):
    """The results.csv columns of an evaluate() result."""
    return {"acc": r["acc"], "per_class_acc": ";".join(f"{p:.1f}" for p in r["per_class"]),
            "batch1_check": f"{r['batch1_mismatch']}/{r['batch1_checked']}" if r["batch1_checked"] else ""}
