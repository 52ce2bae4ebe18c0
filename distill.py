"""Knowledge distillation: train the student of config.yaml from a trained teacher.

    python distill.py                                   # teacher/student/T/alpha from config.yaml
    python distill.py --set distill.temperature=2 --set distill.alpha=0.5
    python distill.py --teacher checkpoints/resnet18_e18_acc94.10.pth --device cpu

loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)

The teacher (distill.teacher, by default "@resnet18", the B2 weights) runs in eval mode on the
same augmented batch as the student.  The student uses train.<student>'s recipe, so the
distilled student (D1, run in FP16) is directly comparable with the same student trained
alone (B1).  Saves checkpoints/<distill.tag>_e<epoch>_acc<acc>.pth, registers "@<distill.tag>"
in the manifest and appends a row to results.csv.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from config import add_config_args, load_config
from models import load_model
from train import train_and_save
import utils


def kd_loss_factory(teacher, temperature, alpha, label_smoothing, channels_last):
    """A loss_fn(logits, y, x) for train.fit: soft targets of the teacher at temperature T."""
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    t2 = temperature * temperature

    def loss_fn(logits, y, x):
        with torch.no_grad():
            t_logits = teacher(x)
        soft = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1),
                        F.softmax(t_logits.float() / temperature, dim=1), reduction="batchmean")
        return alpha * t2 * soft + (1.0 - alpha) * ce(logits, y)
    return loss_fn


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--teacher", help="teacher checkpoint path or @tag (default: distill.teacher)")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    d = cfg.distill
    device = utils.resolve_device(a.device)
    teacher_path = utils.resolve_checkpoint(cfg, a.teacher or d.teacher)
    teacher, tck = load_model(teacher_path, cfg=cfg)
    tcfg = cfg.train[d.student] if d.student in cfg.train else None
    if tcfg is None:
        raise utils.KitError(f"no training recipe train.{d.student} for the student")
    teacher = teacher.to(device).eval()
    if tcfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    utils.log(f"distill: teacher {tck['model']} ({teacher_path}, test {tck.get('test_acc', float('nan')):.2f}%) "
              f"-> student {d.student}, T={d.temperature}, alpha={d.alpha}")

    def factory(tc):
        return kd_loss_factory(teacher, d.temperature, d.alpha, tc.label_smoothing, tc.channels_last)
    train_and_save(cfg, d.student, device, d.tag, script="distill", loss_factory=factory,
                   notes=f"teacher {teacher_path} ({tck['model']}), T={d.temperature:g}, alpha={d.alpha:g}")


if __name__ == "__main__":
    utils.run_main(main)
