"""Evaluate a checkpoint on the full 10,000-image CIFAR-10 test set.

    python eval.py --ckpt checkpoints/final_model.pth            # plain FP32 eager model
    python eval.py --variant F                                   # through F's inference path
    python eval.py --variant O2 --ckpt checkpoints/mobilenetv3_e30_acc88.10.pth
    python eval.py --variant F --device cpu --min-acc 92.0       # exit 1 if below 92 %

Without --variant the checkpoint runs as a plain FP32 model (batches of eval.batch_size).
With --variant V the accuracy is measured through V's own inference path (precision,
memory format, BN folding, fused kernels, torch.compile, CUDA graph), i.e. exactly what
bench.py times: batch-1 paths image by image; eager paths in batches, plus a batch-1
re-check of the first eval.batch1_check images (mismatches are reported).  On the CPU, FP16
and CUDA graphs fall back to FP32 eager (said in the row's notes).
Prints overall and per-class accuracy and appends a row to results.csv.
"""
import sys

from config import MODEL_NAMES, Config, add_config_args, load_config, resolve_path, validate_variant
import utils
from inference import InferenceModel, accuracy_fields, evaluate_inference

# the plain FP32 eager path: every other variant key at its schema default
PLAIN = validate_variant({"label": "plain FP32", "checkpoint": "", "model": "", "table": False}, "eval --ckpt")


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--ckpt", help="checkpoint path or @tag (default: the variant's checkpoint)")
    ap.add_argument("--variant", help="evaluate through this variant's inference path (see config.yaml: variants)")
    ap.add_argument("--model", choices=MODEL_NAMES, help="fail unless the checkpoint holds this architecture")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    ap.add_argument("--min-acc", type=float, help="exit with code 1 if the accuracy is below this (percent)")
    add_config_args(ap)
    a = ap.parse_args()
    if not a.ckpt and not a.variant:
        ap.error("give --ckpt, --variant or both")
    cfg = load_config(a.config, a.overrides)
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    device = utils.resolve_device(a.device)
    variant = a.variant
    if variant is None:  # a plain FP32 path for the given checkpoint
        variant = "plain"
        cfg.variants[variant] = Config(PLAIN)
    elif variant not in cfg.variants:
        raise utils.KitError(f"unknown variant '{variant}' (valid: {', '.join(cfg.variants)})")
    utils.set_seed(cfg.seed)
    im = InferenceModel(cfg, variant, device, checkpoint=a.ckpt, expected_model=a.model)
    data = utils.load_data(cfg, device, need_train=False)
    r = evaluate_inference(im, data, cfg.eval.batch_size, cfg.eval.batch1_check)
    row = utils.base_row(cfg, "eval", device)
    row.update(im.info())
    row.update(accuracy_fields(r))
    row.update(variant=a.variant or "",
               notes="; ".join(im.notes + (["batch-1 path, image by image"] if im.batch1_only else
                                           [f"eager, batches of {cfg.eval.batch_size}"])))
    utils.append_result(results, row)
    print(f"{im.ckpt_path}  [{a.variant or 'plain FP32'}: {im.precision}, {im.memory_format}, "
          f"compile={im.compile}, graph={im.cuda_graph}, {device}]")
    print(f"test accuracy: {r['acc']:.2f}% ({r['n']} images)")
    for name, p in zip(utils.CLASSES, r["per_class"]):
        print(f"  {name:<11s} {p:6.2f}%")
    if r["batch1_checked"]:
        print(f"batch-1 re-check: {r['batch1_mismatch']} mismatches in the first {r['batch1_checked']} images")
    if a.min_acc is not None and r["acc"] < a.min_acc:
        print(f"error: accuracy {r['acc']:.2f}% is below --min-acc {a.min_acc:.2f}%", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    utils.run_main(main)
