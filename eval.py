"""Evaluate a checkpoint on CIFAR-10 through the same end-to-end call that bench.py times.

    python eval.py --variant F                                   # the shipped F, its own inference path
    python eval.py --ckpt checkpoints/final_model.pth            # a checkpoint, plain FP32 eager
    python eval.py --variant O2 --ckpt checkpoints/mobilenetv3_e30_acc88.10.pth
    python eval.py --variant F --device cpu --min-acc 92.0       # exit 1 if below 92 %
    python eval.py --variant F --split val                       # the 5k validation split instead

Every image goes in as a user's would: a uint8 32x32x3 numpy array in host memory, answered
with a class id (inference.Predictor).  Batch-1 paths (CUDA graph, torch.compile) answer image
by image, exactly as timed; eager paths answer in batches of eval.batch_size, and their first
eval.batch1_check images are answered again one by one (mismatches are reported).  On the
CPU, FP16, CUDA graphs and our kernels fall back to FP32 eager (said in the row's notes).
Prints overall and per-class accuracy and appends a row to results.csv.
"""
import math
import sys

from config import MODEL_NAMES, add_config_args, load_config, resolve_path
import utils
from data import CLASSES, host_split
from accuracy import accuracy_fields, evaluate
from inference import Predictor, plain_variant


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--ckpt", help="checkpoint path or @tag (default: the variant's checkpoint)")
    ap.add_argument("--variant", help="evaluate through this variant's inference path (see config.yaml: variants)")
    ap.add_argument("--model", choices=MODEL_NAMES, help="fail unless the checkpoint holds this architecture")
    ap.add_argument("--split", default="test", choices=("test", "val"), help="which images (default: test)")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    ap.add_argument("--min-acc", type=float, help="exit with code 1 if the accuracy is below this (percent)")
    add_config_args(ap)
    a = ap.parse_args()
    if not a.ckpt and not a.variant:
        ap.error("give --ckpt, --variant or both")
    if a.min_acc is not None and not (math.isfinite(a.min_acc) and 0 <= a.min_acc <= 100):
        ap.error(f"--min-acc {a.min_acc}: give a percentage between 0 and 100")
    cfg = load_config(a.config, a.overrides)
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    device = utils.resolve_device(a.device)
    variant = a.variant or plain_variant(cfg)
    if variant not in cfg.variants:
        raise utils.KitError(f"unknown variant '{variant}' (valid: {', '.join(cfg.variants)})")
    utils.set_seed(cfg.seed)
    imgs, labels = host_split(cfg, a.split)  # before the build: bad data stops at once
    clf = Predictor(cfg, variant, device, checkpoint=a.ckpt, expected_model=a.model)
    r = evaluate(clf, imgs, labels, cfg.eval.batch_size, cfg.eval.batch1_check)
    row = utils.base_row(cfg, "eval", device)
    row.update(clf.info())
    row.update(accuracy_fields(r))
    row.update(variant=a.variant or "", split=a.split, shape=clf.ck_meta["shape"] or "",
               notes="; ".join(clf.notes + (["batch-1 path, image by image"] if clf.batch1_only else
                                            [f"eager, batches of {cfg.eval.batch_size}"])))
    utils.append_result(results, row)
    print(f"{clf.ckpt_path}  [{a.variant or 'plain FP32'}: {clf.precision}, {clf.memory_format}, tta={clf.tta}, "
          f"compile={clf.compile}, graph={clf.cuda_graph}, kernels={clf.kernels}, {device}]")
    print(f"{a.split} accuracy: {r['acc']:.2f}% ({r['n']} images)")
    for name, p in zip(CLASSES, r["per_class"]):
        print(f"  {name:<11s} {p:6.2f}%")
    if r["batch1_checked"]:
        print(f"batch-1 re-check: {r['batch1_mismatch']} mismatches in the first {r['batch1_checked']} images")
    if a.min_acc is not None and r["acc"] < a.min_acc:
        print(f"error: accuracy {r['acc']:.2f}% is below --min-acc {a.min_acc:.2f}%", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    utils.run_main(main)
