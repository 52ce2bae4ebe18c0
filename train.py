"""Train one model on CIFAR-10 and save its best-by-validation checkpoint.

    python train.py --model mobilenetv3                      # B1 (and O1-O3) weights
    python train.py --model resnet18                         # B2, also the distillation teacher
    python train.py --model fastnet --final               # F: also written to paths.final_model
    python train.py --model resnet18 --set train.resnet18.epochs=5 --device cpu

The recipe is train.<model> in config.yaml (epochs, batch size, lr, ...).  The 50k train
images are split into train / validation (data.val_size, fixed by the seed); each epoch is
validated and the best epoch's weights are kept; the test set is evaluated once, at the end,
for the record.  Writes checkpoints/<tag>_e<epoch>_acc<test acc>.pth, points the manifest's
entry <tag> at it (variants refer to it as "@<tag>") and appends a row to results.csv.
"""
import os

from config import MODEL_NAMES, add_config_args, load_config, resolve_path
import utils


def train_and_save(cfg, model_name, device, tag, save_as=None, script="train", loss_factory=None, notes=""):
    """Train model_name with train.<model_name>; save, register and record it.  Shared with distill.py."""
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    if model_name not in cfg.train:
        raise utils.KitError(f"no training recipe train.{model_name} in the config (have: {', '.join(cfg.train)})")
    tcfg = cfg.train[model_name]
    utils.set_seed(cfg.seed)
    data = utils.load_data(cfg, device)
    utils.log(f"{script}: {model_name} on {device} ({utils.env_info()['gpu'] or utils.env_info()['cpu']}), "
              f"{len(data['y_train'])} train / {len(data['y_val'])} val images, {tcfg.epochs} epochs")
    model = utils.build_model(model_name, cfg)
    loss_fn = loss_factory(tcfg) if loss_factory else None
    info = utils.fit(model, data, tcfg, cfg, device, loss_fn=loss_fn, desc=tag)
    test_acc = utils.accuracy(model, data["x_test"], data["y_test"])  # FP32, once, for the record
    val_acc = info["val_acc"]
    ckpt_dir = resolve_path(cfg, cfg.paths.checkpoints)
    path = os.path.join(ckpt_dir, utils.checkpoint_name(tag, info["best_epoch"], test_acc))
    meta = dict(tag=tag, epoch=info["best_epoch"], val_acc=val_acc, test_acc=test_acc,
                train_time_s=info["train_time_s"], history=info["history"])
    utils.save_checkpoint(path, model.cpu(), model_name, cfg, **meta)
    rel = os.path.relpath(path, os.path.dirname(cfg.config_file))
    if rel.startswith(".."):  # outside the project: keep it absolute
        rel = os.path.abspath(path)
    utils.update_manifest(cfg, tag, {"path": rel, "model": model_name, "epoch": info["best_epoch"],
                                     "val_acc": round(val_acc, 2), "test_acc": round(test_acc, 2),
                                     "train_time_s": round(info["train_time_s"], 1),
                                     "gpu": utils.env_info()["gpu"], "script": script})
    if save_as:
        utils.save_checkpoint(resolve_path(cfg, save_as), model, model_name, cfg, **meta)
    row = utils.base_row(cfg, script, device)
    row.update(model=model_name, label=tag, precision="bf16-amp" if tcfg.amp and device.type == "cuda" else "fp32",
               memory_format="channels_last" if tcfg.channels_last else "contiguous",
               acc=test_acc, val_acc=val_acc, epochs=info["best_epoch"], train_time_s=info["train_time_s"],
               checkpoint=rel, n_params=sum(p.numel() for p in model.parameters()),
               notes=f"best epoch {info['best_epoch']}/{tcfg.epochs} by validation; acc = FP32 test accuracy"
                     + (f"; {notes}" if notes else ""))
    utils.append_result(results, row)
    utils.log(f"{script}: {tag} best epoch {info['best_epoch']} val {val_acc:.2f}% test {test_acc:.2f}% "
              f"in {info['train_time_s']:.1f}s -> {rel}" + (f" and {save_as}" if save_as else ""))
    return path, test_acc


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--model", required=True, choices=MODEL_NAMES, help="architecture to train")
    ap.add_argument("--tag", help="manifest tag and file-name prefix (default: the model name)")
    ap.add_argument("--save-as", help="also write the checkpoint to this path")
    ap.add_argument("--final", action="store_true", help="also write it to paths.final_model (the shipped F model)")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    device = utils.resolve_device(a.device)
    if device.type == "cpu":
        utils.log("train: no GPU in use: training on the CPU (slow; fine for short runs)")
    save_as = a.save_as or (cfg.paths.final_model if a.final else None)
    train_and_save(cfg, a.model, device, a.tag or a.model, save_as)


if __name__ == "__main__":
    utils.run_main(main)
