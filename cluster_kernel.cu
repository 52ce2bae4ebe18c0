// The whole folded fastnet in ONE kernel launch: one thread-block cluster of NET_RANKS blocks
// (one per SM) that hand each layer's output to the next layer's blocks through their shared
// memory instead of meeting at kernel boundaries.  The host side (cut, weight packing, build,
// launch) is cluster_net.py, which prepends the net's constants (struct Lk per conv layer, the
// per-rank tables, NET_* macros) and appends the kernel's body.
//
// Why a cluster: at batch 1 every layer of the small nets is a few µs of dependent latency
// (launch, loads from L2, split-K atomics, the kernel's end), not of arithmetic.  A cluster's
// blocks are resident together, so they can wait for each other, and a block writes into the
// others' shared memory directly (DSMEM).
//
// Per call: every block prefetches its own slice of every layer's weights (one blob per
// block, packed by the host) with cp.async; a serving kernel keeps them, except the layers the
// host streams (a net whose weights do not fit: their slices are loaded again each call, into
// bytes of buffers whose lifetimes are over, cluster_net._lifetimes).  Block 0 (after
// the gate, when launched ahead) reads the image from pinned host memory and sends each block
// the rows its stem needs.  Layer 1's blocks each compute the stem for their own band of rows
// (and its halo) in shared memory, so the stem's output never leaves the SM.  A layer's block =
// (map, band of output rows, block of output channels); its input rows sit zero-padded in its
// staging buffer, it runs an implicit GEMM with mma.sync (ldmatrix reads each GEMM row straight
// from its pixel: no im2col), and its epilogue pools (max of the 4 rows of a pooled pixel), adds
// the bias, applies GELU and pushes fp16 NHWC into the staging buffers of the next layer's
// blocks that need those rows.  Every hand-over is an st.async counted on the receiver's
// mbarrier (mbar_init): a block waits only for its own input, never for the whole cluster.  The
// last layer's blocks hold whole maps: each takes its channels' maxima and its share of the
// logits and sends it to block 0, which sums them, takes the argmax and writes the answer word
// ((call number << 4) | class id) into pinned host memory.
#include <cuda_fp16.h>
#include <stdint.h>

namespace ck {

constexpr int THREADS = 256;  // 8 warps
constexpr int WARPS = THREADS / 32;
constexpr int SEQ_MASK = (1 << 27) - 1;  // as kernels.SEQ_MASK
constexpr int TRACE = 32;  // stamps per block (cluster_net.TRACE): layer i's at 4i-2 .. 4i+1, the answer at 31

struct Params {
  const void* img;      // the image, NHWC 32x32x3: uint8 (host memory) or fp16 (device)
  const uint8_t* blob;  // [RANKS][NET_BLOB] per-block weights in shared-memory layout
  float* out;           // [16] logits (10 used)
  int* seq;             // the device call counter
  int* word;            // the answer word (pinned host memory) or nullptr
  long long* trace;     // [RANKS][2 * TRACE] %globaltimer (ns) then clock64 stamps of each block's phases, or nullptr
  const int* flag;      // launched ahead of its call: wait for this word (pinned host memory), or nullptr
  long long gate_ns;    // ... at most this long (then the call is marked expired in word[1])
  int img_half;         // 1: img is fp16
  int serve;            // 1: serve calls until the gate expires or the host's stop word (flag[1]) is set
  int tagged;           // 1 (gated): img holds 256 chunks of 16 bytes, 12 of the image and the call number
  int pad;
};

__device__ __forceinline__ void stamp(const Params& p, uint32_t rank, int i) {
  if (p.trace != nullptr && threadIdx.x == 0) {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    p.trace[rank * 2 * TRACE + i] = t;
    p.trace[rank * 2 * TRACE + TRACE + i] = clock64();
  }
}

__device__ __forceinline__ uint32_t saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
// The blocks hand data to each other without cluster-wide barriers: a consumer owns one
// mbarrier per buffer it receives, set at the kernel's start to expect the buffer's byte count;
// producers write into the consumer's shared memory with st.async, each store counting its
// bytes on that mbarrier; the consumer waits for the barrier's phase to complete (all bytes in)
// and nothing else.
__device__ __forceinline__ uint32_t remote(const void* local, uint32_t rank) {
  // the address of `local`'s offset in block `rank`'s shared memory
  uint32_t a;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(a) : "r"(saddr(local)), "r"(rank));
  return a;
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, int bytes) {
  // one arrival (this call's) and `bytes` of stores to come
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(saddr(bar)) : "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(saddr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arm(uint64_t* bar, int bytes) {
  // the next phase: this block's arrival and the bytes it expects (a serving kernel's next call)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(saddr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ long long globaltimer() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// Wait for phase `ph` (0, 1, 0, ...: one a call) of this block's barrier.  A wait longer than
// limit_ns (the gate's limit plus a second) cannot happen in a correct kernel: it traps, so a
// broken hand-over ends the kernel with a CUDA error instead of hanging the GPU.
__device__ __forceinline__ void mbar_wait(const uint64_t* bar, uint32_t ph, long long limit_ns) {
  long long t_end = 0;
  for (;;) {
    uint32_t done;
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
                 "selp.u32 %0, 1, 0, p;\n\t}\n" : "=r"(done) : "r"(saddr(bar)), "r"(ph) : "memory");
    if (done) return;
    const long long t = globaltimer();
    if (t_end == 0) t_end = t + limit_ns;
    else if (t > t_end) __trap();
  }
}
__device__ __forceinline__ void st_cluster(const int* local, uint32_t rank, int v) {
  asm volatile("st.shared::cluster.u32 [%0], %1;\n" ::"r"(remote(local, rank)), "r"(v) : "memory");
}
__device__ __forceinline__ void st_async_f32(const float* local, uint32_t rank, float v, const uint64_t* bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n"
               ::"r"(remote(local, rank)), "r"(__float_as_uint(v)), "r"(remote(bar, rank)) : "memory");
}
__device__ __forceinline__ void st_async_v2(const void* local, uint32_t rank, uint2 v, const uint64_t* bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.b32 [%0], {%1, %2}, [%3];\n"
               ::"r"(remote(local, rank)), "r"(v.x), "r"(v.y), "r"(remote(bar, rank)) : "memory");
}
__device__ __forceinline__ void st_async_v4(const void* local, uint32_t rank, uint4 v, const uint64_t* bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n"
               ::"r"(remote(local, rank)), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(remote(bar, rank)) : "memory");
}
__device__ __forceinline__ void cluster_arrive() {
  // relaxed: what the others need of this block (its mbarriers) is published by
  // fence.mbarrier_init; a release arrival would also order every earlier memory operation
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_arrive_release() {
  // this block's reads of its buffers (and stores) before it are done and seen by the blocks
  // that pass the matching wait: they may then write over those buffers
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive_release();
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void ldsm4(uint32_t* r, uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f)); }

// The block of layer L that this rank computes: maps [n0, n0 + L::NMB), pooled output rows
// [p0, p1), output channels [c0, c0 + L::NBLK); active = false: the rank idles in this layer.
template <class L>
struct Block {
  int n0, p0, p1, c0;
  bool active;
  __device__ Block(int rank) {
    int bm = rank / L::CN, bn = rank % L::CN;
    active = bm < L::NBM;
    int band = bm % L::R;
    n0 = L::NMB == 1 ? bm / L::R : 0;
    p0 = band * L::HO / L::R;
    p1 = (band + 1) * L::HO / L::R;
    c0 = bn * L::NBLK;
  }
  // first input row staged (row 0 of the staging buffer, may be -PAD)
  __device__ int ih0() const { return (L::POOL ? 2 * p0 : p0) - L::PAD; }
  __device__ int rows() const { return (p1 - p0) * L::WO * L::S; }  // GEMM rows per map
};

// One work unit of a block's implicit GEMM: row tile mt (16 rows), column pair np (two n8
// tiles), K slice KSL of L::KSPL (a compile-time range: the K loop unrolls, so every tap
// offset is a constant).  Its partial sums go to copy KSL of C (plain stores: a float atomic
// on shared memory is a compare-and-swap loop on sm_90); the epilogue adds the copies.
template <class L, int KSL>
__device__ __forceinline__ void gemm_unit(const Block<L>& b, int mt, int np, const __half* stage, const __half* wsm,
                                          float* csm, const __half* zero16) {
  constexpr int KS = L::KP / 16;
  constexpr int K_LO = KSL * KS / L::KSPL, K_HI = (KSL + 1) * KS / L::KSPL;
  const int lane = threadIdx.x % 32;
  const int M = b.rows() * L::NMB;
  // this lane's A row (ldmatrix x4: lanes 0-7 rows 0-7, 8-15 rows 8-15, 16-31 the k+8 half)
  const int m = mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int kofs = (lane >> 4) * 8;
  const bool mok = m < M;
  int base = 0;
  if (mok) {
    const int rpm = b.rows();
    const int nl = m / rpm, r = m - nl * rpm;
    int oh, ow;
    if (L::POOL) {
      const int q = r >> 2, s = r & 3;
      oh = 2 * (b.p0 + q / L::WO) + (s >> 1);
      ow = 2 * (q % L::WO) + (s & 1);
    } else {
      oh = b.p0 + r / L::WO;
      ow = r % L::WO;
    }
    base = ((nl * L::SROWS + (oh - b.ih0() - L::PAD)) * L::SW + ow) * L::CSTR;  // tap (0, 0)
  }
  const uint32_t abase = saddr(stage) + 2u * (uint32_t)base;
  // this lane's B row (ldmatrix x4: two n8 tiles x two k halves)
  const int n = np * 16 + (lane & 7) + (lane >> 4) * 8;
  const uint32_t wrow = saddr(wsm + n * L::WSTR + ((lane >> 3) & 1) * 8);
  const uint32_t zaddr = saddr(zero16);
  // NCH independent accumulator chains per n8 tile: at batch 1 a warp has few K steps
  float acc[L::NCH][2][4];
#pragma unroll
  for (int c = 0; c < L::NCH; ++c)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[c][j / 4][j % 4] = 0.f;
#pragma unroll
  for (int ks = K_LO; ks < K_HI; ++ks) {
    // the lane's k = 16 ks + kofs: tap (ky, kx) and channel of its 8-wide half (both halves'
    // offsets are constants; kofs picks one)
    const int k0 = ks * 16, k1 = ks * 16 + 8;
    const int off0 = ((k0 / L::CIN) / L::KH * L::SW + (k0 / L::CIN) % L::KH) * L::CSTR + k0 % L::CIN;
    const int off1 = ((k1 / L::CIN) / L::KH * L::SW + (k1 / L::CIN) % L::KH) * L::CSTR + k1 % L::CIN;
    const bool kin = (kofs ? k1 : k0) < L::K;
    const uint32_t aa = (mok && kin) ? abase + 2u * (uint32_t)(kofs ? off1 : off0) : zaddr;
    uint32_t a[4], bb[4];
    ldsm4(a, aa);
    ldsm4(bb, wrow + 2u * (uint32_t)(ks * 16));
    mma(acc[(ks - K_LO) % L::NCH][0], a, bb[0], bb[1]);
    mma(acc[(ks - K_LO) % L::NCH][1], a, bb[2], bb[3]);
  }
#pragma unroll
  for (int c = 1; c < L::NCH; ++c)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[0][j / 4][j % 4] += acc[c][j / 4][j % 4];
  const int g = lane >> 2, t2 = (lane & 3) * 2;
  float* cs = csm + KSL * (L::MAXM * L::CSTRC);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    float* c0 = cs + (mt * 16 + g) * L::CSTRC + np * 16 + j * 8 + t2;
    *reinterpret_cast<float2*>(c0) = make_float2(acc[0][j][0], acc[0][j][1]);
    *reinterpret_cast<float2*>(c0 + 8 * L::CSTRC) = make_float2(acc[0][j][2], acc[0][j][3]);
  }
}

template <class L, int KSL>
__device__ __forceinline__ void gemm_slice(int ksl, const Block<L>& b, int mt, int np, const __half* stage,
                                           const __half* wsm, float* csm, const __half* zero16) {
  if (ksl == KSL) {
    gemm_unit<L, KSL>(b, mt, np, stage, wsm, csm, zero16);
  } else if constexpr (KSL + 1 < L::KSPL) {
    gemm_slice<L, KSL + 1>(ksl, b, mt, np, stage, wsm, csm, zero16);
  }
}

// The implicit GEMM of one block: C[m][n] (fp32 in shared memory) = sum_k A[m][k] * W[n][k],
// A's row m read in place from the staged pixel of GEMM row m (no im2col).  Work units (row
// tile, column pair, K slice) go round the warps.
template <class L>
__device__ void gemm(const Block<L>& b, const __half* stage, const __half* wsm, float* csm, const __half* zero16) {
  constexpr int NP = L::NBLK / 16;
  constexpr int UNITS = (L::MAXM / 16) * NP * L::KSPL;
  for (int u = threadIdx.x / 32; u < UNITS; u += WARPS) {
    const int ksl = u % L::KSPL, rest = u / L::KSPL;
    gemm_slice<L, 0>(ksl, b, rest / NP, rest % NP, stage, wsm, csm, zero16);
  }
}

template <class L>
__device__ __forceinline__ float c_at(const float* csm, int row, int c) {
  float v = csm[row * L::CSTRC + c];
#pragma unroll
  for (int k = 1; k < L::KSPL; ++k) v += csm[k * (L::MAXM * L::CSTRC) + row * L::CSTRC + c];
  return v;
}

// pooled (max of the 4 rows) + bias, act: the block's output value of GEMM row group q
template <class L>
__device__ __forceinline__ float out_value(const float* csm, const float* bias, int q, int c) {
  float v;
  if (L::POOL) {
    v = fmaxf(fmaxf(c_at<L>(csm, 4 * q, c), c_at<L>(csm, 4 * q + 1, c)),
              fmaxf(c_at<L>(csm, 4 * q + 2, c), c_at<L>(csm, 4 * q + 3, c)));
  } else {
    v = c_at<L>(csm, q, c);
  }
  v += bias[c];
  return L::ACT == 2 ? gelu(v) : fmaxf(v, 0.f);
}

// Epilogue of a layer that is not the last: its fp16 NHWC output goes straight into the
// staging buffers of the next layer's blocks that need it (their shared memory, at this
// block's address of that buffer), four channels a thread.  LN::band(r, .) = {map of rank r's
// block (-1: all maps), its first staged row, active, bytes it receives}: compile-time, so the
// loop over the cluster's ranks unrolls into a few compares; bar: the consumers' mbarrier.
template <class L, class LN>
__device__ void push_out(const Block<L>& b, const float* csm, const float* bias, const __half* next_stage,
                         const uint64_t* bar) {
  constexpr int CH = L::NBLK / 4;
  const int npx = (b.p1 - b.p0) * L::WO;
  for (int i = threadIdx.x; i < L::NMB * npx * CH; i += THREADS) {
    const int ch = i % CH, rest = i / CH;
    const int q = rest % npx, nl = rest / npx;
    const int qq = nl * npx + q;  // GEMM row group
    const __half2 h0 =
        __floats2half2_rn(out_value<L>(csm, bias, qq, 4 * ch), out_value<L>(csm, bias, qq, 4 * ch + 1));
    const __half2 h1 =
        __floats2half2_rn(out_value<L>(csm, bias, qq, 4 * ch + 2), out_value<L>(csm, bias, qq, 4 * ch + 3));
    const uint2 v = make_uint2(*reinterpret_cast<const uint32_t*>(&h0), *reinterpret_cast<const uint32_t*>(&h1));
    const int n = b.n0 + nl, ph = b.p0 + q / L::WO, pw = q % L::WO;
#pragma unroll
    for (int r = 0; r < NET_RANKS; ++r) {
      if (LN::band(r, 2) && (LN::band(r, 0) < 0 || LN::band(r, 0) == n)) {
        const int y = ph - LN::band(r, 1);
        if (y >= 0 && y < LN::SROWS) {
          const int nl2 = LN::band(r, 0) < 0 ? n : 0;
          st_async_v2(next_stage + ((size_t)(nl2 * LN::SROWS + y) * LN::SW + pw + LN::PAD) * LN::CSTR + b.c0 + 4 * ch,
                      r, v, bar);
        }
      }
    }
  }
}

// The staging cells of layer L's block that no producer writes (the conv's zero padding).
template <class L>
__device__ void zero_padding(const Block<L>& b, __half* stage) {
  constexpr int CH = L::CIN / 8;
  const int ih0 = b.ih0();
  for (int i = threadIdx.x; i < L::NMB * L::SROWS * L::SW * CH; i += THREADS) {
    const int px = i / CH, x = px % L::SW, ih = ih0 + (px / L::SW) % L::SROWS;
    if (ih < 0 || ih >= L::H || x < L::PAD || x >= L::W + L::PAD)
      *reinterpret_cast<uint4*>(stage + (size_t)px * L::CSTR + (i % CH) * 8) = make_uint4(0, 0, 0, 0);
  }
}

// Epilogue of the last layer: each map's channel maxima (the block holds whole maps), then
// this block's share of the view-weighted logits, sum_v vw_v * Wfc[:, block] @ max_v, into
// slot `rank` of block 0's shared memory.
template <class L>
__device__ void head_out(const Block<L>& b, const float* csm, const float* bias, const float* wfc, const float* vw,
                         float* mx, float* hv, float* slots, uint32_t rank, const uint64_t* bar) {
  constexpr int NPX = L::HO * L::WO;  // the block holds whole maps
  for (int i = threadIdx.x; i < L::NMB * L::NBLK * NPX; i += THREADS) {  // every output value at once
    const int q = i % NPX, rest = i / NPX;
    const int c = rest % L::NBLK, nl = rest / L::NBLK;
    hv[i] = out_value<L>(csm, bias, nl * NPX + q, c);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < L::NMB * L::NBLK; i += THREADS) {
    float m = hv[i * NPX];
    for (int q = 1; q < NPX; ++q) m = fmaxf(m, hv[i * NPX + q]);
    mx[i] = m;
  }
  __syncthreads();
  if (threadIdx.x < 16) {
    const int k = threadIdx.x;
    float s = 0.f;
    if (k < NET_NCLS) {
      for (int nl = 0; nl < L::NMB; ++nl) {
        float t = 0.f;
        for (int c = 0; c < L::NBLK; ++c) t += wfc[k * L::NBLK + c] * mx[nl * L::NBLK + c];
        s += vw[nl] * t;
      }
    }
    st_async_f32(slots + rank * 16 + k, 0, s, bar);
  }
}

// The stem (a valid SKxSK conv of the raw image + bias + act, the normalisation folded in)
// for the input rows of layer 1's block, computed in place into layer 1's staging buffer
// (zeros where the conv pads), view flip of the image when `flip`; on the CUDA cores, eight
// channels a thread (a tensor-core version, the pixels' taps gathered into A rows, measured
// slower: the GELUs dominate).  img: the block's image rows [r0, ...) as fp16.
template <class L, int SK>
__device__ void stem_into_stage(const Block<L>& b, const __half* img, int r0, const float* sw, const float* sb,
                                __half* stage, bool flip) {
  constexpr int CH = L::CIN / 8;
  const int ih0 = b.ih0();
  constexpr int TOT = L::SROWS * L::SW * CH;
  for (int i = threadIdx.x; i < TOT; i += THREADS) {
    const int ch = i % CH, px = i / CH;
    const int x = px % L::SW, y = px / L::SW;
    const int ih = ih0 + y, iw = x - L::PAD;  // a stem output pixel (layer 1's input)
    __align__(16) __half h[8];
    if (ih >= 0 && ih < L::H && iw >= 0 && iw < L::W) {
      float acc[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] = sb[ch * 8 + j];
#pragma unroll
      for (int dy = 0; dy < SK; ++dy)
#pragma unroll
        for (int dx = 0; dx < SK; ++dx) {
          const int col = flip ? (NET_IMG_W - 1 - (iw + dx)) : (iw + dx);
          const __half* p = img + ((ih + dy - r0) * NET_IMG_W + col) * 3;
#pragma unroll
          for (int ci = 0; ci < 3; ++ci) {
            const float v = __half2float(p[ci]);
            const float* w = sw + ((dy * SK + dx) * 3 + ci) * L::CIN + ch * 8;  // the stem's width is layer 1's input
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[j] = fmaf(v, w[j], acc[j]);
          }
        }
#pragma unroll
      for (int j = 0; j < 8; ++j) h[j] = __float2half_rn(NET_STEM_ACT == 2 ? gelu(acc[j]) : fmaxf(acc[j], 0.f));
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) h[j] = __float2half_rn(0.f);
    }
    *reinterpret_cast<uint4*>(stage + (size_t)px * L::CSTR + ch * 8) = *reinterpret_cast<const uint4*>(h);
  }
}

// Block 0 reads the whole image (uint8 from pinned host memory: one coalesced 16-byte read per
// thread over PCIe, .cv: never a cached copy of an earlier call's image; or fp16 on the device)
// and sends each block the rows [r0, r1) its stem needs, as fp16, into its `rows` buffer
// (IMG::band(r, .) = {r0, r1}).  Small reads from many SMs at once queue up on PCIe; one
// block's single read of the image does not.  read_image: the loads (issued before the
// cluster's start barrier completes); send_image: after it.
template <class IMG>
__device__ __forceinline__ uint4 read_image(const Params& p) {
  constexpr int BYTES = NET_IMG_W * NET_IMG_W * 3;
  const int n16 = p.img_half ? BYTES * 2 / 16 : BYTES / 16;
  uint4 v = make_uint4(0, 0, 0, 0);
  const int i = threadIdx.x;  // one chunk a thread (fp16's second 128: send_image)
  if (i < n16 && i < THREADS)
    v = p.img_half ? __ldcg(reinterpret_cast<const uint4*>(p.img) + i)
                   : __ldcv(reinterpret_cast<const uint4*>(p.img) + i);
  return v;
}

template <class IMG>
__device__ __forceinline__ void send_chunk(int row, int col, uint4 v, const __half* rows, const uint64_t* bar) {
  // 8 fp16 at (row, col) of the image, to every block whose rows hold `row`
#pragma unroll
  for (int r = 0; r < NET_RANKS; ++r)
    if (row >= IMG::band(r, 0) && row < IMG::band(r, 1))
      st_async_v4(rows + (row - IMG::band(r, 0)) * NET_IMG_W * 3 + col, r, v, bar);
}

// The tagged image (e2e_input: tagged): 12 bytes a thread, as fp16, to every block whose rows
// hold them (a row of 96 bytes is 8 chunks: none straddles two rows).
template <class IMG>
__device__ void send_tagged(const uint4 v, const __half* rows, const uint64_t* bar) {
  constexpr int ROWB = NET_IMG_W * 3;
  const uint32_t w[3] = {v.x, v.y, v.z};
  __align__(8) __half h[12];
#pragma unroll
  for (int j = 0; j < 12; ++j) h[j] = __ushort2half_rn((w[j / 4] >> (8 * (j % 4))) & 0xff);
  const int e = threadIdx.x * 12, row = e / ROWB, col = e % ROWB;
#pragma unroll
  for (int r = 0; r < NET_RANKS; ++r)
    if (row >= IMG::band(r, 0) && row < IMG::band(r, 1))
#pragma unroll
      for (int q = 0; q < 3; ++q)
        st_async_v2(rows + (row - IMG::band(r, 0)) * ROWB + col + 4 * q, r,
                    reinterpret_cast<const uint2*>(h)[q], bar);
}

template <class IMG>
__device__ void send_image(const Params& p, uint4 v, const __half* rows, const uint64_t* bar) {
  constexpr int ROWB = NET_IMG_W * 3;  // values per row
  if (!p.img_half) {
    if (threadIdx.x < ROWB * NET_IMG_W / 16) {
      const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&v);
      __align__(16) __half h[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) h[j] = __ushort2half_rn(bytes[j]);
      const int e = threadIdx.x * 16, row = e / ROWB, col = e % ROWB;
      send_chunk<IMG>(row, col, reinterpret_cast<const uint4*>(h)[0], rows, bar);
      send_chunk<IMG>(row, col + 8, reinterpret_cast<const uint4*>(h)[1], rows, bar);
    }
  } else {  // fp16: 384 chunks of 8 values; threads 0-127 read and send a second one
    const int e = threadIdx.x * 8;
    send_chunk<IMG>(e / ROWB, e % ROWB, v, rows, bar);
    if (threadIdx.x < ROWB * NET_IMG_W / 8 - THREADS) {
      const int i2 = threadIdx.x + THREADS, e2 = i2 * 8;
      send_chunk<IMG>(e2 / ROWB, e2 % ROWB, __ldcg(reinterpret_cast<const uint4*>(p.img) + i2), rows, bar);
    }
  }
}

__device__ __forceinline__ void store_wt(int* a, int v) {  // through to host memory at once
  asm volatile("st.global.wt.s32 [%0], %1;" ::"l"(a), "r"(v) : "memory");
}

// Launched ahead of its call (inference.Predictor, e2e_launch: ahead or serve), block 0 is the
// call's gate, as kernels.gate_kernel: it stamps word[2] (ready), then waits until the host's
// flag word holds the call's number, (device counter + 1) & SEQ_MASK, at most gate_ns; if it
// never comes, word[1] says so (ahead: the host then takes the launch queued behind this one;
// serve: the host launches the kernel again).  A serving kernel also stops when the host sets
// flag[1].  Everything that does not need the image (the weights' prefetch) is already under
// way.  Returns 1 when the call came (to every thread of block 0; box: a shared word).
__device__ int gate(const Params& p, int seq, int* box) {
  if (p.flag == nullptr) return 1;
  if (threadIdx.x == 0) {
    const int want = (seq + 1) & SEQ_MASK;
    store_wt(p.word + 2, want);
    const long long t_end = globaltimer() + p.gate_ns;
    int f, stop;
    for (;;) {  // both words in one read
      asm volatile("ld.volatile.global.v2.s32 {%0, %1}, [%2];" : "=r"(f), "=r"(stop) : "l"(p.flag) : "memory");
      if (f == want || stop || globaltimer() >= t_end) break;
    }
    if (f != want && !stop) store_wt(p.word + 1, want);
    __threadfence_system();  // the image is read after the flag was seen
    *box = f == want;
  }
  __syncthreads();
  return *box;
}

// The gate of a tagged image: every thread of block 0 polls its own 16-byte chunk of the image
// buffer in host memory until the chunk's call number (its last word, written by the host
// after the 12 image bytes before it) is this call's: the image arrives in the same read that
// says the call came, one trip over PCIe instead of two (the flag, then the image).  One 16-byte
// read sees one state of the chunk, and the host's stores become visible in program order, so
// a chunk holding the number holds that call's bytes.  Thread 0 also watches the stop word.
// Returns 1 when every chunk came (v: this thread's chunk); else word[1] names the call (expiry).
// box: two shared words, the stop seen and the call's number (seq is thread 0's alone).
__device__ int gate_tagged(const Params& p, int seq, int* box, uint4& v) {
  if (threadIdx.x == 0) {
    box[1] = (seq + 1) & SEQ_MASK;
    store_wt(p.word + 2, box[1]);
    *box = 0;
  }
  __syncthreads();
  const int want = box[1];
  const long long t_end = globaltimer() + p.gate_ns;
  const uint4* src = reinterpret_cast<const uint4*>(p.img) + threadIdx.x;
  int ok = 0;
  for (;;) {
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(src) : "memory");
    if ((int)v.w == want) { ok = 1; break; }
    if (threadIdx.x == 0) {
      int stop;
      asm volatile("ld.volatile.global.s32 %0, [%1];" : "=r"(stop) : "l"(p.flag + 1) : "memory");
      if (stop) *reinterpret_cast<volatile int*>(box) = 1;
    }
    if (*reinterpret_cast<volatile int*>(box) || globaltimer() >= t_end) break;
  }
  const int all = __syncthreads_and(ok);
  if (threadIdx.x == 0 && !all && !*box) store_wt(p.word + 1, want);
  return all;
}

}  // namespace ck
