// The whole folded fastnet in ONE kernel launch: one thread-block cluster of RANKS blocks
// (one per SM), the layers meeting at the cluster's hardware barrier instead of at kernel
// boundaries.  The host side (plan, weight packing, build, launch) is cluster_net.py, which
// prepends the net's constants (struct Lk per conv layer, NET_* macros) and the kernel's body.
//
// Why a cluster: at batch 1 every layer of the small nets is a few µs of dependent latency
// (launch, loads from L2, split-K atomics, the kernel's end), not of arithmetic.  A cluster's
// blocks are resident together, so they can wait for each other; its barrier is a hardware
// one (no atomics in L2), and a block reaches the others' shared memory directly.
//
// Per call: every block prefetches its own slice of every layer's weights (one blob per
// block, packed by the host in this file's shared-memory layout) with cp.async, while it
// reads the image rows it needs straight from pinned host memory.  Layer 1's blocks each
// compute the stem for their own band of rows (and its halo) in shared memory, so the stem's
// output never leaves the SM.  A layer's block = (map, band of output rows, block of output
// channels); it stages its input rows (zero-padded) in shared memory, runs an implicit GEMM
// with mma.sync (ldmatrix reads each GEMM row straight from its pixel: no im2col), and its
// epilogue pools (max of the 4 rows of a pooled pixel), adds the bias, applies GELU and stores
// fp16 NHWC into a global buffer (L2) that the next layer stages from after the barrier.
// The last layer's blocks hold whole maps: each takes its channels' maxima and its share of
// the logits and writes it into block 0's shared memory; block 0 sums them, takes the argmax
// and writes the answer word ((call number << 4) | class id) into pinned host memory.
#include <cuda_fp16.h>
#include <stdint.h>

namespace ck {

constexpr int THREADS = 256;  // 8 warps
constexpr int WARPS = THREADS / 32;
constexpr int SEQ_MASK = (1 << 27) - 1;  // as kernels.SEQ_MASK

struct Params {
  const void* img;      // the image, NHWC 32x32x3: uint8 (host memory) or fp16 (device)
  const uint8_t* blob;  // [RANKS][NET_BLOB] per-block weights in shared-memory layout
  __half* act;          // the layers' outputs, fp16 NHWC, at the offsets of NET_ACT_OFF
  float* out;           // [16] logits (10 used)
  int* seq;             // the device call counter
  int* word;            // the answer word (pinned host memory) or nullptr
  int img_half;         // 1: img is fp16
};

__device__ __forceinline__ uint32_t saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ void cluster_sync() {
  // release: this block's global and shared stores are seen by every block of the cluster
  // after their acquire; the barrier is the cluster's hardware one
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ void st_remote_f32(const float* local, uint32_t rank, float v) {
  // store into block `rank`'s shared memory at the address of `local` in this block
  uint32_t a;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(a) : "r"(saddr(local)), "r"(rank));
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(a), "f"(v) : "memory");
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

// Stage the block's input rows (all maps of the block) from the previous layer's fp16 NHWC
// output in global memory into shared memory, zero outside the image (the conv's padding).
template <class L>
__device__ void stage_from_global(const Block<L>& b, const __half* src, __half* stage) {
  constexpr int CH = L::CIN / 8;  // 16-byte chunks per pixel
  const int ih0 = b.ih0();
  constexpr int TOT = L::NMB * L::SROWS * L::SW * CH;
  for (int i = threadIdx.x; i < TOT; i += THREADS) {
    int ch = i % CH, px = i / CH;
    int x = px % L::SW, rest = px / L::SW;
    int y = rest % L::SROWS, nl = rest / L::SROWS;
    int ih = ih0 + y, iw = x - L::PAD;
    __half* d = stage + (size_t)px * L::CSTR + ch * 8;
    if (ih >= 0 && ih < L::H && iw >= 0 && iw < L::W)
      cp16(d, src + ((size_t)((b.n0 + nl) * L::H + ih) * L::W + iw) * L::CIN + ch * 8);
    else
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
  }
  cp_commit();
}

// The implicit GEMM of one block: C[m][n] (fp32 in shared memory, zeroed by the caller) +=
// sum_k A[m][k] * W[n][k], A's row m read in place from the staged pixel of GEMM row m.
// Work units (row tile of 16, pair of n8 tiles, K slice) go round the warps; each adds its
// partial sums into C with shared-memory atomics.
template <class L>
__device__ void gemm(const Block<L>& b, const __half* stage, const __half* wsm, float* csm, const __half* zero16) {
  constexpr int MT = L::MAXM / 16, NP = L::NBLK / 16, KS = L::KP / 16;
  constexpr int UNITS = MT * NP * L::KSPL;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int M = b.rows() * L::NMB;
  const int ih0 = b.ih0();
  for (int u = warp; u < UNITS; u += WARPS) {
    const int ksl = u % L::KSPL, rest = u / L::KSPL;
    const int np = rest % NP, mt = rest / NP;
    const int k_lo = ksl * KS / L::KSPL, k_hi = (ksl + 1) * KS / L::KSPL;
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
      base = ((nl * L::SROWS + (oh - ih0 - L::PAD)) * L::SW + ow) * L::CSTR;  // tap (0, 0)
    }
    // this lane's B row (ldmatrix x4: two n8 tiles x two k halves)
    const int n = np * 16 + (lane & 7) + (lane >> 4) * 8;
    const int kb = ((lane >> 3) & 1) * 8;
    const uint32_t wrow = saddr(wsm + n * L::WSTR + kb);
    const uint32_t zaddr = saddr(zero16);
    const uint32_t sbase = saddr(stage);
    float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    for (int ks = k_lo; ks < k_hi; ++ks) {
      const int k = ks * 16 + kofs;
      uint32_t aa = zaddr;
      if (mok && k < L::K) {
        const int tap = k / L::CIN, ci = k - tap * L::CIN;
        const int ky = tap / L::KH, kx = tap - ky * L::KH;
        aa = sbase + 2u * (uint32_t)(base + (ky * L::SW + kx) * L::CSTR + ci);
      }
      uint32_t a[4], bb[4];
      ldsm4(a, aa);
      ldsm4(bb, wrow + 2u * (uint32_t)(ks * 16));
      mma(acc[0], a, bb[0], bb[1]);
      mma(acc[1], a, bb[2], bb[3]);
    }
    const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int col = np * 16 + j * 8 + t2;
      float* c0 = csm + (mt * 16 + g) * L::CSTRC + col;
      float* c1 = c0 + 8 * L::CSTRC;
      atomicAdd(c0, acc[j][0]);
      atomicAdd(c0 + 1, acc[j][1]);
      atomicAdd(c1, acc[j][2]);
      atomicAdd(c1 + 1, acc[j][3]);
    }
  }
}

template <class L>
__device__ void zero_c(float* csm) {
  for (int i = threadIdx.x; i < L::MAXM * L::CSTRC / 4; i += THREADS)
    reinterpret_cast<float4*>(csm)[i] = make_float4(0.f, 0.f, 0.f, 0.f);
}

// pooled (max of the 4 rows) + bias, act: the block's output value of GEMM row group q
template <class L>
__device__ __forceinline__ float out_value(const float* csm, const float* bias, int q, int c) {
  float v;
  if (L::POOL) {
    const float* p = csm + (q * 4) * L::CSTRC + c;
    v = fmaxf(fmaxf(p[0], p[L::CSTRC]), fmaxf(p[2 * L::CSTRC], p[3 * L::CSTRC]));
  } else {
    v = csm[q * L::CSTRC + c];
  }
  v += bias[c];
  return L::ACT == 2 ? gelu(v) : fmaxf(v, 0.f);
}

// Epilogue of a layer that is not the last: fp16 NHWC into its global output buffer.
template <class L>
__device__ void store_out(const Block<L>& b, const float* csm, const float* bias, __half* dst) {
  constexpr int CH = L::NBLK / 8;
  const int npx = (b.p1 - b.p0) * L::WO;
  for (int i = threadIdx.x; i < L::NMB * npx * CH; i += THREADS) {
    const int ch = i % CH, rest = i / CH;
    const int q = rest % npx, nl = rest / npx;
    const int qq = nl * npx + q;  // GEMM row group
    __align__(16) __half h[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = __float2half_rn(out_value<L>(csm, bias, qq, ch * 8 + j));
    const int ph = b.p0 + q / L::WO, pw = q % L::WO;
    __half* d = dst + ((size_t)((b.n0 + nl) * L::HO + ph) * L::WO + pw) * L::COUT + b.c0 + ch * 8;
    *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(h);
  }
}

// Epilogue of the last layer: each map's channel maxima (the block holds whole maps), then
// this block's share of the view-weighted logits, sum_v vw_v * Wfc[:, block] @ max_v, into
// slot `rank` of block 0's shared memory.
template <class L>
__device__ void head_out(const Block<L>& b, const float* csm, const float* bias, const float* wfc, const float* vw,
                         float* mx, float* part, float* slots, uint32_t rank) {
  const int npx = (b.p1 - b.p0) * L::WO;
  for (int i = threadIdx.x; i < L::NMB * L::NBLK; i += THREADS) {
    const int c = i % L::NBLK, nl = i / L::NBLK;
    float m = -INFINITY;
    for (int q = 0; q < npx; ++q) m = fmaxf(m, out_value<L>(csm, bias, nl * npx + q, c));
    mx[i] = m;
  }
  __syncthreads();
  if (threadIdx.x < 16) {
    const int k = threadIdx.x;
    float s = 0.f;
    if (k < 10) {
      for (int nl = 0; nl < L::NMB; ++nl) {
        float t = 0.f;
        for (int c = 0; c < L::NBLK; ++c) t += wfc[k * L::NBLK + c] * mx[nl * L::NBLK + c];
        s += vw[nl] * t;
      }
    }
    st_remote_f32(slots + rank * 16 + k, 0, s);
  }
}

// The stem (2x2 valid conv of the raw image + bias + act, folded normalisation) for the
// input rows of layer 1's block, computed in place into layer 1's staging buffer; view
// (flip) of map n0 when the net has TTA views.  img: the block's image rows [r0, ...) as fp16.
template <class L, int SC, int SK>
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
            const float* w = sw + ((dy * SK + dx) * 3 + ci) * SC + ch * 8;
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

// The image rows [r0, r1) into shared memory as fp16: uint8 from pinned host memory (16-byte
// reads over PCIe, .cv: never a cached copy of an earlier call's image) or fp16 on the device.
__device__ void load_image_rows(const Params& p, int r0, int r1, __half* img) {
  constexpr int ROWB = NET_IMG_W * 3;  // uint8 bytes per row (96)
  if (!p.img_half) {
    const int n16 = (r1 - r0) * ROWB / 16;
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.img) + r0 * ROWB);
    for (int i = threadIdx.x; i < n16; i += THREADS) {
      uint4 v = __ldcv(src + i);
      const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&v);
      __align__(16) __half h[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) h[j] = __ushort2half_rn(bytes[j]);
      reinterpret_cast<uint4*>(img)[2 * i] = reinterpret_cast<const uint4*>(h)[0];
      reinterpret_cast<uint4*>(img)[2 * i + 1] = reinterpret_cast<const uint4*>(h)[1];
    }
  } else {
    const int n16 = (r1 - r0) * ROWB * 2 / 16;
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const __half*>(p.img) + r0 * ROWB);
    for (int i = threadIdx.x; i < n16; i += THREADS) reinterpret_cast<uint4*>(img)[i] = __ldcg(src + i);
  }
}

}  // namespace ck
