"""The tiles of our Triton kernels (kernels.py): each layer's shapes, the heuristic tiles, the
build-time search's candidates, and the tile cache file (results/tiles.json) that
tools/kernel_tune.py (each layer alone) and tools/chain_tune.py (a whole net's layers together)
write.  KernelNet (kernel_net.py) chooses a layer's tiles from these; nothing here launches a kernel.
"""
import hashlib
import json
import os

import torch

from kernels import ACTS
from utils import KitError, atomic_write_bytes, check_writable, env_info

PDL_TRIGGERS = {"early": 1, "late": 2}  # the kernels' PDL constexpr: where each lets the next one launch
SPLIT_MEETS = ("count", "next", "flag")  # where a split-K layer's slices meet (KernelNet split_meet)


# ============================================================================= layer shapes and tiles
def _pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _layer_meta(L, h, w, cin):
    """Shapes of one layer given its input map (h, w, cin); checks the contract."""
    cout, cin_w, kh, kw = L["weight"].shape
    if cin_w != cin or kh != kw:
        raise ValueError(f"layer weight {tuple(L['weight'].shape)} does not fit input channels {cin}")
    if L["pool"] not in (0, 2) or L["act"] not in ACTS:
        raise ValueError(f"layer pool {L['pool']} / act {L['act']!r}: pool must be 0 or 2, act relu|gelu")
    ho, wo = h + 2 * L["padding"] - kh + 1, w + 2 * L["padding"] - kw + 1
    if L["pool"]:
        ho, wo = ho // 2, wo // 2
    return dict(H=h, W=w, CIN=cin, COUT=cout, KH=kh, PAD=L["padding"], S=4 if L["pool"] else 1,
                HO=ho, WO=wo, ACT=ACTS[L["act"]])


def _k_steps(m, t):
    """K-loop length of a layer for tile t."""
    if t["GENERIC"]:
        return -(-(m["KH"] ** 2 * m["CIN"]) // t["BK"])
    return m["KH"] ** 2 * (m["CIN"] // t["BK"])


def row_tiles(m, t, nb):
    """(maps, m_tiles): the grid's row tiles are maps x m_tiles, m_tiles a map's row tiles; with
    JOIN tiles (rows of all maps in turn) 1 x the row tiles of all maps' rows."""
    if t.get("JOIN"):
        return 1, -(-nb * m["HO"] * m["WO"] // t["BP"])
    return nb, -(-m["HO"] * m["WO"] // t["BP"])


def scratch_shape(m, t, nb, m_tiles, split):
    """(rows, columns) of a layer's fp32 split-K scratch, where its K slices' partial sums meet:
    a row per pre-pool output pixel of every row tile, a column per output channel; (1, 1), a
    placeholder, for a layer without split-K.  m_tiles as row_tiles gives it."""
    maps = row_tiles(m, t, nb)[0]
    return (maps * m_tiles * t["BP"] * m["S"], m["COUT"]) if split > 1 else (1, 1)


def heuristic_tiles(m, batch, n_sm=132, target=None):
    """Tiles for one layer: 16-row tiles (4 pooled pixels x 4 for a pooled layer), 16-32
    channel columns, then split K until about `target` programs run (each keeps >= 2 K steps)."""
    generic = m["CIN"] % 16 != 0
    ktot = m["KH"] ** 2 * m["CIN"]
    if generic:
        bk = 32 if ktot <= 32 else 64
    else:
        bk = 64 if m["CIN"] % 64 == 0 else (32 if m["CIN"] % 32 == 0 else 16)
    t = dict(BP=4 if m["S"] == 4 else 16, BN=32 if m["COUT"] >= 64 else 16, BK=bk, GENERIC=generic,
             num_warps=4, num_stages=3)
    return _with_split(m, t, batch, target or n_sm)


def _with_split(m, t, batch, target):
    maps, mt = row_tiles(m, t, batch)
    base = maps * mt * -(-m["COUT"] // t["BN"])
    t["SPLIT"] = int(max(1, min(target // base, _k_steps(m, t) // 2)))
    return t


WIDE_LAUNCH = [(4, 2), (4, 4), (8, 2), (8, 3), (8, 4)]  # (num_warps, num_stages) beside the default (4, 3)


def candidates(m, batch, n_sm, wide=False):
    """The build-time search space around the heuristic: row tiles x1/x2 (x4 too for the layer
    reading the image; the whole map when it has <= 16 pixels), 16-64 channel columns, K steps
    of 1, 2 or 4 times the heuristic's (a longer step: fewer dependent trips round the K loop),
    steps of 2 or 4 whole taps through the flattened-K loads (a layer's K steps are otherwise at
    least its taps), and split-K aimed at 1 (none: no L2 round trips), n_sm/2, n_sm or 2 n_sm
    programs.  SPLIT is a runtime
    argument, so the compiled kernels are only the (BP, BN, BK) triples: tools/kernel_tune.py
    compiles them in parallel processes first (KernelNet.search_tiles(timed=False)).
    With several maps per call (TTA views), the layers after the image's also get JOIN tiles
    (rows of all maps in turn: a late layer's small maps then fill a tile's rows, and one tile
    may hold every map's whole output, the last layer's head mode 3), row tiles x1/x2 or all
    maps' rows in one tile (<= 128 rows), the columns also all the channels when that tile
    stays <= 32 x 256; a tile of >= 32 x 256 also runs with 8 warps.
    wide: also 8 warps and 2 / 4 pipeline stages (WIDE_LAUNCH) for layers of >= 64 input
    channels (the long K loops), 6x the compiles."""
    h = heuristic_tiles(m, batch, n_sm)
    ks = [(h["BK"], h["GENERIC"])]
    if not h["GENERIC"]:
        ks += [(bk, False) for bk in (2 * h["BK"], 4 * h["BK"]) if bk <= 256 and m["CIN"] % bk == 0]
        if m["KH"] > 1:  # a step of 2 or 4 taps (the flattened-K loads): a 9-tap layer of <= 64 channels
            ks += [(bk, True) for bk in (2 * m["CIN"], 4 * m["CIN"]) if bk <= 256]  # has 9 steps otherwise
    bps = [h["BP"], 2 * h["BP"]]
    if m["CIN"] == 3:  # the layer that reads the image: fewer, longer row tiles too (fewer reads of it)
        bps.append(4 * h["BP"])
    if m["HO"] * m["WO"] <= 16 and _pow2(m["HO"] * m["WO"]) not in bps:
        bps.append(_pow2(m["HO"] * m["WO"]))  # the whole (small) map in one row tile: a last layer's head mode 2
    bns = [bn for bn in (16, 32, 64) if bn <= max(16, _pow2(m["COUT"]))]
    shapes = [(bp, bn, bk, generic, False) for bp in bps for bn in bns for bk, generic in ks]
    if batch > 1 and m["CIN"] != 3 and not h["GENERIC"]:
        whole = _pow2(batch * m["HO"] * m["WO"])  # every map's output in one row tile
        jbps = sorted({bp for bp in (h["BP"], 2 * h["BP"], whole) if bp * m["S"] <= 128 and bp <= whole})
        for bp in jbps:
            jbns = list(bns)
            if bp == whole and bp * m["S"] * _pow2(m["COUT"]) <= 32 * 256 and _pow2(m["COUT"]) not in jbns:
                jbns.append(_pow2(m["COUT"]))
            shapes += [(bp, bn, bk, False, True) for bn in jbns for bk, generic in ks if not generic]
    out = []
    for bp, bn, bk, generic, join in shapes:
        for tgt in (1, n_sm // 2, n_sm, 2 * n_sm):
            t = dict(h, BP=bp, BN=bn, BK=bk, GENERIC=generic)
            if join:
                t["JOIN"] = True
            t = _with_split(m, t, batch, tgt)
            for w in ((4, 8) if bp * m["S"] * bn >= 32 * 256 else (4,)):  # a big tile: 8 warps too (registers)
                tw = dict(t, num_warps=w)
                if tw not in out:
                    out.append(tw)
    if wide and m["CIN"] >= 64 and not h["GENERIC"]:
        out += [dict(t, num_warps=w, num_stages=st) for t in list(out) for w, st in WIDE_LAUNCH]
    return out


def _check_trigger(t):
    """A layer's tiles may name its own PDL trigger (tools/chain_tune.py tries both per layer);
    JOIN tiles read their rows through the blocked loads only."""
    if t.get("trigger", "early") not in PDL_TRIGGERS:
        raise ValueError(f"tiles {t}: trigger must be one of {', '.join(PDL_TRIGGERS)}")
    if t.get("JOIN") and t["GENERIC"]:
        raise ValueError(f"tiles {t}: JOIN tiles need GENERIC false")
    if t.get("MEET", "count") not in SPLIT_MEETS:
        raise ValueError(f"tiles {t}: MEET must be one of {', '.join(SPLIT_MEETS)}")


# ============================================================================= the tile cache
def tile_key(m, nb, gpu):
    """The tile cache's key of one layer: the GPU's name, the maps per call, the layer's shape."""
    return f"{gpu}|nb={nb}|" + ",".join(f"{k}={m[k]}" for k in sorted(m))


def chain_key(metas, nb, gpu, pdl, i):
    """The tile cache's key of layer i tuned as part of a whole net (tools/chain_tune.py): the
    GPU, the maps per call, the PDL mode (off | early | late) and a digest of every layer's
    shape.  A layer's best tiles depend on its neighbours (with PDL the next kernel's programs
    take SMs while this one runs), so these keys name the net, and win over the layer's own."""
    net = ";".join(",".join(f"{k}={m[k]}" for k in sorted(m)) for m in metas)
    return f"{gpu}|nb={nb}|pdl={pdl}|net={hashlib.sha1(net.encode()).hexdigest()[:12]}|L{i}"


def read_tile_cache(path):
    """{key: tiles} from a tile cache file (tools/kernel_tune.py writes it); {} if absent."""
    if not path or not os.path.exists(path):
        return {}
    fix = "delete it (the kernels then use their heuristic tiles; tools/kernel_tune.py on a GPU writes a new one)"
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # truncated, empty, binary: JSONDecodeError is a ValueError
        raise KitError(f"{path}: not a readable tile cache ({type(e).__name__}: {str(e)[:120]}); {fix}") from None
    if not isinstance(d, dict) or not isinstance(d.get("tiles"), dict):
        raise KitError(f"{path}: not a tile cache (expected {{'tiles': {{key: tiles}}}}); {fix}")
    return d["tiles"]


def begin_tuning(path, tool, does):
    """What a tile tuner (tools/kernel_tune.py, tools/chain_tune.py) checks before any work: the
    cache file can be written and what is there is a readable cache (the new entries merge into
    it: a damaged one stops here, not after the tuning), and a GPU is there.  Prints the
    environment; returns the cache's "about" record for the entries it will write."""
    check_writable(path, "give a writable --out file")
    read_tile_cache(path)
    if not torch.cuda.is_available():
        raise KitError(f"{tool} {does} on a GPU: run it on a machine with a CUDA GPU")
    env = env_info()
    import triton
    print(f"{env['gpu']}, torch {env['torch']}, triton {triton.__version__}, commit {env['git_commit']}")
    return {"gpu": env["gpu"], "torch": env["torch"], "triton": triton.__version__, "commit": env["git_commit"],
            "by": f"tools/{tool}"}


def write_tile_cache(path, entries, meta):
    """Merge {key: tiles} into the cache file (atomic replace): the newest tuning of a key wins."""
    d = {"about": meta, "tiles": {**read_tile_cache(path), **entries}}
    atomic_write_bytes(path, (json.dumps(d, indent=1, sort_keys=True) + "\n").encode())
