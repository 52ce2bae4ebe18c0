"""Recipe exploration on the GPU (issue 9): train several fastnet shapes / recipes in one process
and print validation accuracy (what chooses), test accuracy and flip-TTA test accuracy (for the
record only) and training time.  Usage: python tools/recipe_explore.py OUT.json [names...]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import utils  # noqa: E402
from config import load_config  # noqa: E402
from inference import TTANet  # noqa: E402
from train import accuracy, fit  # noqa: E402

AB = ["models.fastnet.stem=whiten", "models.fastnet.stem_kernel=2", "models.fastnet.stem_width=24",
      "models.fastnet.widths=[64,256,256]", "models.fastnet.depths=[2,2,2]", "models.fastnet.act=gelu",
      "models.fastnet.order=pool_bn", "models.fastnet.bn_frozen=true", "models.fastnet.bn_momentum=0.4",
      "models.fastnet.bn_eps=1.0e-12", "models.fastnet.head_bias=false", "models.fastnet.logit_scale=0.1111",
      "models.fastnet.dirac=true"]
REC = ["train.fastnet.batch_size=1024", "train.fastnet.lr=1.5", "train.fastnet.momentum=0.85",
       "train.fastnet.weight_decay=0.00133", "train.fastnet.warmup_epochs=2", "train.fastnet.lr_start=0.2",
       "train.fastnet.bias_lr_scale=64", "train.fastnet.decay_biases=true", "train.fastnet.label_smoothing=0.2",
       "train.fastnet.pad=2", "train.fastnet.flip=alternate", "train.fastnet.lookahead=true",
       "train.fastnet.whiten_bias_epochs=3", "train.fastnet.select=last", "train.fastnet.val_every_epoch=false",
       "train.fastnet.cudnn_benchmark=true"]
E1 = {  # exploration 1 (results/recipe/explore1_h100.json)
    "ab94_e10": AB + REC + ["train.fastnet.epochs=10"],
    "ab94_e16": AB + REC + ["train.fastnet.epochs=16"],
    "ab94_e24": AB + REC + ["train.fastnet.epochs=24"],
    "ab94relu_e16": AB + REC + ["train.fastnet.epochs=16", "models.fastnet.act=relu"],
    "ab94_e16_nolook": AB + REC + ["train.fastnet.epochs=16", "train.fastnet.lookahead=false"],
    "ab94_e16_s1": AB + REC + ["train.fastnet.epochs=16", "seed=1"],
    "small_e16": AB + REC + ["train.fastnet.epochs=16", "models.fastnet.widths=[32,64,128]",
                             "models.fastnet.depths=[1,1,1]"],
    "mid_e16": AB + REC + ["train.fastnet.epochs=16", "models.fastnet.widths=[64,128,256]",
                           "models.fastnet.depths=[1,1,1]"],
}
# exploration 2: epochs and lookahead over 3 seeds on 45k/5k (validation chooses); the same
# recipe on all 50k (val_size=0, fixed schedule, decided before the run) for the record
NL = AB + REC + ["train.fastnet.lookahead=false"]
RUNS = dict(E1)
for _s in (42, 1, 2):
    RUNS[f"e24_s{_s}"] = NL + ["train.fastnet.epochs=24", f"seed={_s}"]
    RUNS[f"e30_s{_s}"] = NL + ["train.fastnet.epochs=30", f"seed={_s}"]
    RUNS[f"e30look_s{_s}"] = AB + REC + ["train.fastnet.epochs=30", f"seed={_s}"]
    RUNS[f"e30full_s{_s}"] = NL + ["train.fastnet.epochs=30", f"seed={_s}", "data.val_size=0"]
E2 = [f"{r}_s{s}" for r in ("e24", "e30", "e30look", "e30full") for s in (42, 1, 2)]


@torch.no_grad()
def tta_acc(model, x, y, mode):
    """Test accuracy with a TTA mode of inference.py (the same views as the timed path)."""
    model.eval()
    tta = TTANet(model, mode).eval()
    correct = 0
    for i in range(0, len(x), 1000):
        xb = x[i:i + 1000]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lo = tta(xb).float()
        correct += int((lo.argmax(1) == y[i:i + 1000]).sum())
    return 100.0 * correct / len(x)


def main():
    out, names = sys.argv[1], sys.argv[2:] or E2
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    data = None
    rows = []
    for name in names:
        cfg = load_config(None, RUNS[name])
        if data is not None and data["val_size"] != cfg.data.val_size or data is not None and data["seed"] != cfg.seed:
            data = None  # another split (val_size, or the seed that fixes it)
        utils.set_seed(cfg.seed)
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
        if data is None:
            data = utils.load_data(cfg, dev)
            data.update(val_size=cfg.data.val_size, seed=cfg.seed)
        model = utils.build_model("fastnet", cfg)
        info = fit(model, data, cfg.train.fastnet, cfg, dev, desc=name)
        model.to(dev)
        r = dict(name=name, train_s=round(info["train_time_s"], 2), compile_s=round(info["compile_s"], 1),
                 val=round(info["val_acc"], 2), test=round(accuracy(model, data["x_test"], data["y_test"]), 2),
                 test_flip=round(tta_acc(model, data["x_test"], data["y_test"], "flip"), 2),
                 test_ft=round(tta_acc(model, data["x_test"], data["y_test"], "flip_translate"), 2),
                 params=sum(p.numel() for p in model.parameters()))
        rows.append(r)
        print("RESULT", json.dumps(r), flush=True)
        json.dump({"env": utils.env_info(), "rows": rows}, open(out, "w"), indent=1)
    print(f"{'name':<18s} {'train_s':>7s} {'val':>6s} {'test':>6s} {'flip':>6s} {'flip_tr':>7s}")
    for r in rows:
        print(f"{r['name']:<18s} {r['train_s']:7.2f} {r['val']:6.2f} {r['test']:6.2f} {r['test_flip']:6.2f} "
              f"{r['test_ft']:7.2f}")


if __name__ == "__main__":
    main()
