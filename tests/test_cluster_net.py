"""The cluster kernel's host side on the CPU (cluster_plan, cluster_net): its cut of every
layer over the cluster's blocks, its shared-memory layout, the per-block weight blobs, the generated kernel (built with nvcc where there is one), and the
clear errors.  The kernel itself runs on a GPU only (tests/test_gpu.py)."""
import numpy as np
import pytest
import torch

from conftest import ROOT

import cluster_net as C
import cluster_plan as P


def _spec(name="f85_model.pth"):
    from config import load_config
    from models import load_model
    cfg = load_config()
    model, _ = load_model(f"{ROOT}/checkpoints/{name}", "fastnet", cfg=cfg)
    return model.eval().folded_spec(cfg.data.mean, cfg.data.std)


FLIP = [((False, 0, 0), 0.5), ((True, 0, 0), 0.5)]


# F85's net fits shared memory as it is; F's (airbench94's widths) needs barriers and streamed
# weights: every plan test runs on both
NETS = [("f85_model.pth", 8), ("f85_model.pth", 16), ("final_model.pth", 16)]


@pytest.mark.parametrize("name,ranks", NETS)
@pytest.mark.parametrize("views", [1, 2])
def test_every_output_of_every_layer_belongs_to_exactly_one_block(name, ranks, views):
    layers, _ = _spec(name)
    p = P.plan(layers, views, ranks)
    assert p["smem"] <= P.SMEM_MAX and len(p["convs"]) == len(layers) - 1
    for i, m in enumerate(p["convs"]):
        seen = np.zeros((views, m["HO"], m["COUT"]), dtype=int)
        for r in range(ranks):
            b = P._block(m, r)
            assert (b is None) == (not m["BAND"][r][2])
            if b is None:
                continue
            maps = range(views) if m["NMB"] > 1 else [b["n0"]]
            for n in maps:
                seen[n, b["p0"]:b["p1"], b["c0"]:b["c0"] + m["NBLK"]] += 1
            assert m["BAND"][r][1] == (2 * b["p0"] if m["POOL"] else b["p0"]) - m["PAD"]
            rows = (b["p1"] - b["p0"]) * (2 if m["POOL"] else 1) + m["KH"] - 1
            assert rows <= m["SROWS"] and len(maps) * (b["p1"] - b["p0"]) * m["WO"] * m["S"] <= m["MAXM"]
        assert (seen == 1).all(), f"layer {i + 1}"
        last = i == len(p["convs"]) - 1
        assert not last or (m["R"] == 1 and m["NMB"] == views)  # the head's blocks hold whole maps
        # ldmatrix's 8 rows: a pixel stride of an odd number of 16-byte chunks, rows of 4 mod 8 pixels
        assert (m["CSTR"] * 2 // 16) % 2 == 1 and m["SW"] % 8 == 4 and m["SW"] >= m["W"] + 2 * m["PAD"]


@pytest.mark.parametrize("name", ["f85_model.pth", "final_model.pth"])
def test_each_blob_holds_its_blocks_weights_in_the_kernels_layout(name):
    layers, head = _spec(name)
    p = P.plan(layers, 2, 16)
    blob = C.pack(p, layers, head, FLIP)
    assert blob.shape == (16, p["blob"])
    for i, (m, L) in enumerate(zip(p["convs"], layers[1:])):
        want = L["weight"].half().permute(0, 2, 3, 1).reshape(m["COUT"], -1).numpy()
        o, size = p["segs"][i]["W"]
        for r in range(16):
            b = P._block(m, r)
            w = blob[r, o:o + size].view(np.float16).reshape(m["NBLK"], m["WSTR"])
            if b is None:
                assert not w.any()
                continue
            assert np.array_equal(w[:, :m["K"]], want[b["c0"]:b["c0"] + m["NBLK"]])
            assert not w[:, m["K"]:].any()  # K padding and the bank-spreading columns are zero
            ob, sb = p["segs"][i]["B"]
            assert np.array_equal(blob[r, ob:ob + sb].view(np.float32), L["bias"].numpy()[b["c0"]:b["c0"] + m["NBLK"]])
    # the head's segment: the view weights, then sum_v w_v * b from float 16 on
    o, size = p["segs"][-1]["VW"]
    vw = blob[0, o:o + size].view(np.float32)
    assert np.allclose(vw[:2], [0.5, 0.5]) and np.allclose(vw[16:26], head["bias"].numpy())


@pytest.mark.parametrize("name,views", [("f85_model.pth", 1), ("final_model.pth", 2)])
def test_the_generated_kernel_builds(tmp_path, monkeypatch, name, views):
    """The whole generated source through nvcc (skipped where there is none): what the GPU would
    load; a second build of the same source comes from the cache."""
    if C.nvcc_path() is None:
        pytest.skip("no nvcc")
    monkeypatch.setenv("KIT_CACHE", str(tmp_path))
    layers, _ = _spec(name)
    src = C.source(P.plan(layers, views, 16))
    assert "__cluster_dims__(16, 1, 1)" in src and "struct L3" in src
    cubin = C.build(src)
    assert cubin[:4] == b"\x7fELF" and C.build(src) == cubin
    assert len(list((tmp_path / "cluster").glob("*.cubin"))) == 1


def test_bad_builds_and_shapes_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE", str(tmp_path))
    monkeypatch.setattr(C, "nvcc_path", lambda: None)
    with pytest.raises(RuntimeError, match="nvcc not found"):  # bench.py goes on without the variant
        C.build("// nothing")
    layers, _ = _spec("final_model.pth")  # airbench94's widths over 8 blocks: more than a block has
    with pytest.raises(ValueError, match="shared memory per block .* even with a cluster barrier after every layer"):
        P.plan(layers, 2, 8)
    with pytest.raises(ValueError, match="at least one conv layer"):
        P.plan(layers[:1], 1, 16)
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        C.ClusterNet(*_spec(), device="cpu")


def test_a_cluster_variant_with_pdl_is_refused():
    import utils
    from config import load_config
    from inference import Predictor
    cfg = load_config(None, ["variants.F85_cluster.kernel_pdl=true"])
    with pytest.raises(utils.KitError, match="kernel_engine 'cluster' needs"):
        Predictor._check_variant(cfg.variants.F85_cluster, _model())


def test_cluster_blocks_without_the_cluster_engine_are_refused():
    import utils
    from config import load_config
    from inference import Predictor
    cfg = load_config(None, ["variants.F85_triton.kernel_cluster_blocks=8"])
    with pytest.raises(utils.KitError, match="kernel_cluster_blocks 8 needs kernel_engine: cluster"):
        Predictor._check_variant(cfg.variants.F85_triton, _model())


def test_serving_needs_the_cluster_engine_and_host_io():
    import utils
    from config import load_config
    from inference import Predictor
    cfg = load_config(None, ["variants.F85_triton.e2e_launch=serve", "variants.F85.e2e_wait=sync"])
    with pytest.raises(utils.KitError, match="e2e_launch 'serve' needs kernel_engine: cluster"):
        Predictor._check_variant(cfg.variants.F85_triton, _model())
    with pytest.raises(utils.KitError, match="e2e_launch 'serve' needs kernels: true, e2e_input: mapped and e2e_wait"):
        Predictor._check_variant(cfg.variants.F85, _model())


def test_the_serving_kernel_loops_and_a_single_call_does_not():
    """One source serves both: the round loop on barrier phases ph, the answer only for a call
    that came, the early return of a single call (p.serve = 0) before the round's end."""
    layers, _ = _spec()
    src = C.source(P.plan(layers, 1, 16))
    body = src[src.index("cluster_net_kernel("):]
    loop = body.index("for (uint32_t ph = 0;; ph ^= 1)")
    assert body.index("ck::mbar_wait(bars, ph, watchdog)") > loop
    assert body.index("if (!p.serve) return;") < body.index("ck::cluster_sync();") < body.index("if (ctrl[2]) return;")
    assert "if (!p.serve || go)" in body and body.count("go = ck::gate(p, seq, ctrl);") == 2
    assert body.count("ck::mbar_arm(") == len(P.plan(layers, 1, 16)["convs"]) + 1


def test_a_tagged_image_is_refused_without_serving_and_lays_out_as_the_kernel_reads_it():
    import utils
    from config import load_config
    from inference import Predictor
    cfg = load_config(None, ["variants.F85_tagged.e2e_launch=ahead"])
    with pytest.raises(utils.KitError, match="e2e_input 'tagged' needs e2e_launch: serve"):
        Predictor._check_variant(cfg.variants.F85_tagged, _model())
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = np.full(C.TAGGED_SHAPE, -1, dtype=np.int32)
    C.ClusterNet.tag_image(buf, img, 7)
    chunks = buf.view(np.uint8).reshape(C.THREADS, 16)  # thread t of block 0 reads chunk t
    assert (chunks[:, :12].reshape(-1) == img.reshape(-1)).all() and (buf[:, 3] == 7).all()
    # the kernel's send_tagged: thread t's 12 bytes are image row 12t // 96, columns (12t % 96) ...
    t = 77
    row, col = 12 * t // 96, 12 * t % 96
    assert (chunks[t, :12] == img.reshape(32, 96)[row, col:col + 12]).all()
    src = C.source(P.plan(_spec()[0], 1, 16))
    assert src.count("if (p.tagged) go = ck::gate_tagged(p, seq, ctrl, px);") == 2


def _model():
    from models import load_model
    from config import load_config
    return load_model(f"{ROOT}/checkpoints/f85_model.pth", "fastnet", cfg=load_config())[0]


def test_on_the_cpu_a_cluster_variant_runs_the_fp32_fallback():
    """Without a GPU the variant is the same weights in FP32 eager, said so (as every kernel variant)."""
    from config import load_config
    from inference import Predictor
    clf = Predictor(load_config(), "F85_cluster_ahead", torch.device("cpu"))
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    assert isinstance(clf(img), int) and any("cpu fallback" in n for n in clf.notes)


def test_weight_bytes_count_as_the_triton_engine_counts_them():
    """The size column means the same for both engines: KernelNet's packed weights, biases and padded head."""
    import kernel_net as K
    layers, head = _spec()
    want = sum(K._pack_weight(L).numel() * 2 + L["bias"].numel() * 4 for L in layers)
    want += 16 * K._pow2(max(head["weight"].shape[1], 16)) * 4 + 16 * 4
    assert C.weight_bytes(layers, head) == want
    assert round(want / 1e6, 2) == 0.21  # F85's size in the final table


@pytest.mark.parametrize("name,ranks", NETS)
@pytest.mark.parametrize("views", [1, 2])
def test_every_block_expects_exactly_the_bytes_its_producers_send(name, ranks, views):
    """A consumer waits until its mbarrier has counted the bytes the plan says it gets; one byte
    short and the kernel would never end.  Replays the kernel's senders (send_image, push_out,
    head_out) over the plan's tables and checks every rank's count."""
    layers, _ = _spec(name)
    p = P.plan(layers, views, ranks)
    convs, l1 = p["convs"], p["convs"][0]
    got = np.zeros(ranks, dtype=int)
    for row in range(32):  # block 0 sends every 8 fp16 of the image rows each stem needs
        for r, (r0, r1, _) in enumerate(p["img"]):
            got[r] += 32 * 3 // 8 * 16 if r0 <= row < r1 else 0
    assert got.tolist() == [b for *_, b in p["img"]]
    assert sum(b for *_, b in p["img"]) > 0 and [r0 for r0, *_ in p["img"]][0] == 0
    for m, nxt in zip(convs, convs[1:]):  # push_out: 4 channels (8 bytes) per store
        got = np.zeros(ranks, dtype=int)
        for pr in range(ranks):
            b = P._block(m, pr)
            if b is None:
                continue
            for n in (range(views) if m["NMB"] > 1 else [b["n0"]]):
                for ph in range(b["p0"], b["p1"]):
                    for r, (mp, ih0, act, _) in enumerate(nxt["BAND"]):
                        if act and (mp < 0 or mp == n) and 0 <= ph - ih0 < nxt["SROWS"]:
                            got[r] += m["WO"] * (m["NBLK"] // 4) * 8
        assert got.tolist() == [bb for *_, bb in nxt["BAND"]]
    assert p["head_bytes"] == 64 * sum(act for _, _, act, _ in convs[-1]["BAND"])
    assert l1["BAND"][0][1] == -1  # layer 1's first band starts at the top padding row


@pytest.mark.parametrize("name,ranks", NETS)
@pytest.mark.parametrize("views", [1, 2])
def test_buffers_in_use_at_once_never_share_a_byte(name, ranks, views):
    """The arena's objects (image rows, stagings, GEMM outputs, streamed weights) share bytes only
    when their lifetimes are apart; everything lies inside the block's shared memory, aligned as
    cp.async and ldmatrix need; a net that fits as it is (F85) shares nothing and needs no
    barrier; F's net fits only with them."""
    layers, _ = _spec(name)
    p = P.plan(layers, views, ranks)
    w, life = p["work"], p["life"]
    objs = {k: w[k] for k in life}
    sizes = {"IMG": (p["convs"][0]["SROWS"] + p["stem"]["KH"] - 1) * 32 * 3 * 2}
    for i, m in enumerate(p["convs"]):
        sizes[f"S{i + 1}"] = m["NMB"] * m["SROWS"] * m["SW"] * m["CSTR"] * 2
        sizes[f"C{i + 1}"] = m["KSPL"] * m["MAXM"] * m["CSTRC"] * 4
        if i + 1 in p["streamed"]:
            sizes[f"W{i + 1}"] = p["segs"][i]["W"][1]
    assert set(objs) == set(sizes)
    for a in objs:
        assert objs[a] >= p["resident"] + 16 and objs[a] + sizes[a] <= w["MX"] and objs[a] % 16 == 0
        for b in objs:
            if a < b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                assert objs[a] + sizes[a] <= objs[b] or objs[b] + sizes[b] <= objs[a], (a, b)
    assert p["smem"] <= P.SMEM_MAX
    if name == "f85_model.pth":
        assert not p["barriers"] and not p["streamed"] and not p["zero_each_call"]
    else:
        assert p["barriers"] and p["streamed"] and 1 not in p["streamed"]


def _replay_groups(src, calls=2):
    """The cp.async groups of the generated kernel over the prologue and `calls` served calls:
    yields, at every GEMM, (layer, weights' shared offset, {16-byte chunk: (group that last wrote
    it, blob chunk it copied)}, completed groups).  cp_commit closes a group of the copies before
    it; cp_wait<N> completes all but the N newest."""
    import re
    body = src[src.index("cluster_net_kernel("):]
    loop = body.index("for (uint32_t ph = 0;; ph ^= 1)")
    end = body.index("if (ctrl[2]) return;")
    lines = body[:loop].splitlines() + body[loop:end].splitlines() * calls
    n_groups, open_copy, writer, done, n16 = 0, [], {}, set(), 0
    for ln in lines:
        if (m := re.search(r"i < (\d+); i \+= ck::THREADS\)", ln)):
            n16 = int(m.group(1))
        elif (m := re.search(r"ck::cp16\(sm \+ (\d+) \+ 16 \* i, blob \+ (\d+) \+ 16 \* i\)", ln)):
            open_copy.append((int(m.group(1)), int(m.group(2)), n16))
        elif "ck::cp_commit();" in ln:
            for dst, src_, k in open_copy:
                writer.update({dst // 16 + c: (n_groups, src_ // 16 + c) for c in range(k)})
            n_groups, open_copy = n_groups + 1, []
        elif (m := re.search(r"ck::cp_wait<(\d+)>", ln)):
            done |= set(range(n_groups - int(m.group(1))))
        elif (m := re.search(r"ck::gemm<L(\d+)>\(b\d+, stage\d+, reinterpret_cast<const __half\*>\(sm \+ (\d+)\)", ln)):
            yield int(m.group(1)), int(m.group(2)), dict(writer), set(done)


@pytest.mark.parametrize("name,views", [("f85_model.pth", 1), ("f85_model.pth", 2), ("final_model.pth", 2),
                                        ("final_model.pth", 1)])
def test_every_gemm_finds_its_weights_loaded_in_two_served_calls(name, views):
    """Replays the kernel's cp.async groups (the prologue, then two served calls: a streamed
    layer's weights are loaded anew each call, the first of them at the previous call's end):
    every 16 bytes a layer's GEMM reads as weights were last written from that layer's weights
    in the blob, by a group complete by then."""
    layers, _ = _spec(name)
    p = P.plan(layers, views, 16)
    seen = []
    for layer, off, writer, done in _replay_groups(C.source(p)):
        w_blob, size = p["segs"][layer - 1]["W"]
        assert off == (p["work"][f"W{layer}"] if layer in p["streamed"] else w_blob)
        for c in range(size // 16):
            g, from_chunk = writer[off // 16 + c]
            assert g in done and from_chunk == w_blob // 16 + c, (layer, c)
        seen.append(layer)
    assert seen == list(range(1, len(p["convs"]) + 1)) * 2
