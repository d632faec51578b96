// Float32 cosine similarity as one blocked GEMM of our own, with the norms and the scaling folded into it.
//
// Why not CBLAS here: with BLAS, cosine similarity is the GEMM plus two extra passes, one reading B for its
// norms (B is the big side: 200 MB at 100k x 512) and one reading and writing the output to scale it (100 MB at
// 256 x 100k). Both are memory-bound and cost ~10-15% over the bare sgemm at (256, 100000, 512). A GEMM packs B
// anyway, so here the norms of B are summed while its panels are packed (B is read from memory once) and the
// micro-kernel scales its results by inv_a[i] * inv_b[j] as it stores them (the output is written once).
//
// Layout (BLIS-style): A is packed once into panels of kMR = 8 rows (per depth block: k-major, 8 floats per k),
// B into panels of kNR = 32 rows (k-major, 32 floats per k), panel by panel just before use, per thread. The
// micro-kernel keeps an 8 x 32 tile of the output in 16 zmm registers: per k it loads two vectors of the B panel
// and broadcasts 8 values of the A panel into 16 FMAs (8 x 32 measured faster than 12 x 32 and 4 x 32 here).
// The output is row-major, so each tile row is two full 64-byte vectors; outputs larger than the caches are
// written with streaming stores. Measured on the 2-core Zen 4 machine (bench/): 87-91% of the FMA peak at
// (256, 100000, 512), a few % faster than OpenBLAS's bare sgemm on the same shapes (which does no norm work).
#include "packed_gemm.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "kernel_common.hpp"
#include "topk_select.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// GCC on x86-64: this code is compiled for AVX-512 whatever the build flags (a portable build too) and runs only
// on CPUs that have it (packed_gemm_available checks at run time). Every header is included above the pragma,
// so no inline library code is compiled for AVX-512, only the functions below.
#include <immintrin.h>
#define MB_HAVE_PACKED_GEMM 1
#define MB_PACKED_RUNTIME_CHECK 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx2")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own avx512fintrin.h, under this pragma
#elif defined(__AVX512F__)  // other compilers: only when the build targets AVX-512 (e.g. -march=native)
#include <immintrin.h>
#define MB_HAVE_PACKED_GEMM 1
#endif

namespace metric_bindings::detail {

#if defined(MB_HAVE_PACKED_GEMM)
namespace {

constexpr std::int64_t kMR = 8;                     // output rows per micro-tile (rows of A)
constexpr std::int64_t kNR = 32;                    // output columns per micro-tile (rows of B): two zmm
constexpr std::int64_t kKC = 1024;                  // depth of one packed block (measured: 1024 > 768 > 512)
constexpr std::int64_t kNC = 256;                   // rows of B per packed chunk (<= 1 MiB: mostly in L2)
constexpr std::size_t kABlockBytes = 576u << 10;    // packed A panels swept per B panel: stays in L2
constexpr std::size_t kStreamBytes = 16u << 20;     // outputs above this bypass the caches (streaming stores)

/// Per-thread B scratch (packed chunk, squared norms, inverse norms), handed out to whichever threads run a call
/// and kept for the next call: a fresh 4 MiB buffer costs ~1000 page faults on first touch.
struct BScratch {
    Scratch<float> packed, inv;
    std::vector<double> sums;
};

class ScratchPool {
   public:
    std::unique_ptr<BScratch> acquire() {
        std::lock_guard<std::mutex> lock(mu_);
        if (free_.empty()) return std::make_unique<BScratch>();
        auto s = std::move(free_.back());
        free_.pop_back();
        return s;
    }
    void release(std::unique_ptr<BScratch> s) {
        std::lock_guard<std::mutex> lock(mu_);
        if (free_.size() < 8 && s->packed.bytes() <= kKeepScratchBytes) free_.push_back(std::move(s));
    }

   private:
    std::mutex mu_;
    std::vector<std::unique_ptr<BScratch>> free_;
};

ScratchPool& scratch_pool() {
    static ScratchPool pool;
    return pool;
}

/// Depth blocking: npc blocks of kc (the last one may be shorter).
struct DepthBlocks {
    std::int64_t kc, npc;
    explicit DepthBlocks(std::int64_t d) : kc(0), npc((d + kKC - 1) / kKC) { kc = (d + npc - 1) / npc; }
    std::int64_t begin(std::int64_t p) const { return p * kc; }
    std::int64_t size(std::int64_t p, std::int64_t d) const { return std::min(kc, d - p * kc); }
};

/// The mask of the first `count` of 16 float lanes (count clamped to [0, 16]): partial tiles and depth tails.
inline __mmask16 first_lanes(std::int64_t count) {
    return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1u);
}

/// In-register transpose of 16 vectors of 16 floats.
inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/// Packs rows [0, rows) of b (rows <= kNR), depth [k0, k0 + kc), as one k-major panel of kNR floats per k
/// (missing rows are zeros), and adds each row's sum of squares to sums.
///
/// Full panels are transposed 16 x 16 in registers; after the transpose a vector holds one k for 16 rows, so
/// the squares add up vertically (one lane per row) in the same pass: B is read once, for the GEMM and the
/// norms. Each 16-k partial sum is added in double, so a long row does not lose precision.
void pack_b_panel(const float* b, std::int64_t ldb, std::int64_t rows, std::int64_t k0, std::int64_t kc,
                  float* dst, double* sums) {
    std::int64_t k_done = 0;
    if (rows == kNR) {
        const std::int64_t k16 = kc / 16 * 16;
        for (int h = 0; h < 2; ++h) {
            __m512d lo = _mm512_loadu_pd(sums + h * 16), hi = _mm512_loadu_pd(sums + h * 16 + 8);
            for (std::int64_t k = 0; k < k16; k += 16) {
                __m512 v[16];
                for (int r = 0; r < 16; ++r) v[r] = _mm512_loadu_ps(b + (h * 16 + r) * ldb + k0 + k);
                transpose16(v);
                __m512 sq = _mm512_setzero_ps();
                for (int q = 0; q < 16; ++q) {
                    _mm512_store_ps(dst + (k + q) * kNR + h * 16, v[q]);
                    sq = _mm512_fmadd_ps(v[q], v[q], sq);
                }
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sq), 1))));
            }
            _mm512_storeu_pd(sums + h * 16, lo);
            _mm512_storeu_pd(sums + h * 16 + 8, hi);
        }
        k_done = k16;
    }
    for (std::int64_t r = 0; r < rows; ++r) {  // the rest: partial panels, and the depth left over from 16s
        const float* x = b + r * ldb + k0;
        double s = 0.0;
        for (std::int64_t k = k_done; k < kc; ++k) s += static_cast<double>(x[k]) * static_cast<double>(x[k]);
        sums[r] += s;
    }
    for (std::int64_t k = k_done; k < kc; ++k) {
        float* o = dst + k * kNR;
        for (std::int64_t r = 0; r < rows; ++r) o[r] = b[r * ldb + k0 + k];
        for (std::int64_t r = rows; r < kNR; ++r) o[r] = 0.0f;
    }
}

/// Packs rows [0, rows) of a (rows <= kMR), depth [k0, k0 + kc), as a k-major panel of kMR floats per k.
void pack_a_panel(const float* a, std::int64_t lda, std::int64_t rows, std::int64_t k0, std::int64_t kc,
                  float* dst) {
    for (std::int64_t r = 0; r < rows; ++r) {
        const float* x = a + r * lda + k0;
        for (std::int64_t k = 0; k < kc; ++k) dst[k * kMR + r] = x[k];
    }
    for (std::int64_t r = rows; r < kMR; ++r)
        for (std::int64_t k = 0; k < kc; ++k) dst[k * kMR + r] = 0.0f;
}

/// How a micro-kernel finishes its tile.
struct Epilogue {
    bool accumulate;  // add to what the output holds (a later depth block)
    bool scale;       // last depth block: multiply by inv_a[i] * inv_b[j]
    bool stream;      // write with streaming stores (only for full, aligned tiles)
};

/// Top-k mode: where the last depth block's scores go instead of the output (rows row0.., columns col0..).
struct SelectTo {
    TopkRows* rows;
    std::int64_t row0, col0;
};

/// out[R x cols] (ldo) = (+=) A panel (R of kMR rows used) x B panel over kc, scaled as the epilogue says.
/// With sel (top-k), the last depth block is not stored: each row of the scaled tile is compared with its row's
/// bar in registers (one compare per 16 scores) and only a tile with survivors is handed to sel.
template <int R>
inline void micro_kernel(std::int64_t kc, const float* __restrict ap, const float* __restrict bp,
                         float* __restrict out, std::int64_t ldo, std::int64_t cols, Epilogue e,
                         const float* inv_a, const float* inv_b, const SelectTo* sel) {
    __m512 c0[R], c1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    for (std::int64_t k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m512 av = _mm512_set1_ps(ap[r]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
        ap += kMR;
        bp += kNR;
    }
    const __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
    const __m512 s0 = _mm512_load_ps(inv_b), s1 = _mm512_load_ps(inv_b + 16);
    if (sel != nullptr && e.scale) {
        const float* bar = sel->rows->thresholds() + sel->row0;
        const std::uint32_t valid = std::uint32_t(m0) | (std::uint32_t(m1) << 16);  // real columns only
        alignas(64) float tile[R * 32];
        std::uint32_t masks[R], any = 0;
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const float* o = out + r * ldo;
            __m512 v0 = c0[r], v1 = c1[r];
            if (e.accumulate) {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, o));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, o + 16));
            }
            const __m512 ar = _mm512_set1_ps(inv_a[r]);
            v0 = _mm512_mul_ps(v0, _mm512_mul_ps(ar, s0));
            v1 = _mm512_mul_ps(v1, _mm512_mul_ps(ar, s1));
            const __m512 t = _mm512_set1_ps(bar[r]);  // !(v < bar): NaN scores pass, and so do ties
            const std::uint32_t mask = (std::uint32_t(_mm512_cmp_ps_mask(v0, t, _CMP_NLT_UQ)) |
                                        (std::uint32_t(_mm512_cmp_ps_mask(v1, t, _CMP_NLT_UQ)) << 16)) &
                                       valid;
            masks[r] = mask;
            any |= mask;
            if (mask != 0) {
                _mm512_store_ps(tile + 32 * r, v0);
                _mm512_store_ps(tile + 32 * r + 16, v1);
            }
        }
        if (any != 0) sel->rows->offer(tile, masks, R, sel->row0, sel->col0);
        return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        float* o = out + r * ldo;
        __m512 v0 = c0[r], v1 = c1[r];
        if (e.accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, o));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, o + 16));
        }
        if (e.scale) {
            const __m512 ar = _mm512_set1_ps(inv_a[r]);
            v0 = _mm512_mul_ps(v0, _mm512_mul_ps(ar, s0));
            v1 = _mm512_mul_ps(v1, _mm512_mul_ps(ar, s1));
        }
        if (e.stream) {
            _mm512_stream_ps(o, v0);
            _mm512_stream_ps(o + 16, v1);
        } else {
            _mm512_mask_storeu_ps(o, m0, v0);
            _mm512_mask_storeu_ps(o + 16, m1, v1);
        }
    }
}

using MicroKernel = void (*)(std::int64_t, const float*, const float*, float*, std::int64_t, std::int64_t, Epilogue,
                             const float*, const float*, const SelectTo*);

/// The micro-kernel for a tile of `rows` rows (1..kMR): a short last panel computes only its real rows.
MicroKernel micro_kernel_for(std::int64_t rows) {
    static constexpr MicroKernel table[kMR + 1] = {nullptr,         micro_kernel<1>, micro_kernel<2>,
                                                   micro_kernel<3>, micro_kernel<4>, micro_kernel<5>,
                                                   micro_kernel<6>, micro_kernel<7>, micro_kernel<8>};
    return table[rows];
}

/// Software prefetch (into L2) of the raw rows of the next B panel, spread over the micro-kernel calls of the
/// current one, so that packing it reads from cache instead of waiting on memory.
class RowPrefetcher {
   public:
    RowPrefetcher() = default;
    RowPrefetcher(const float* base, std::int64_t ld, std::int64_t rows, std::int64_t kc, std::int64_t steps)
        : base_(reinterpret_cast<const char*>(base)), ld_bytes_(ld * static_cast<std::int64_t>(sizeof(float))),
          rows_(rows), lines_per_row_((kc * static_cast<std::int64_t>(sizeof(float)) + 63) / 64) {
        per_step_ = (rows_ * lines_per_row_ + steps - 1) / std::max<std::int64_t>(steps, 1);
    }
    void step() {
        for (std::int64_t i = 0; i < per_step_ && row_ < rows_; ++i) {
            _mm_prefetch(base_ + row_ * ld_bytes_ + line_ * 64, _MM_HINT_T1);
            if (++line_ == lines_per_row_) {
                line_ = 0;
                ++row_;
            }
        }
    }

   private:
    const char* base_ = nullptr;
    std::int64_t ld_bytes_ = 0, rows_ = 0, lines_per_row_ = 0, per_step_ = 0, row_ = 0, line_ = 0;
};

/// Packed A (all panels, all depth blocks) and its inverse norms, kept per calling thread between calls.
struct AScratch {
    Scratch<float> packed, inv;
};

/// Few columns: R rows of A (broadcast straight from their rows, no packing) against the V * 16 packed rows of
/// B (k-major: for each k, V vectors of 16 B rows, padded with zeros). R * V accumulators stay in registers; each
/// k loads V vectors and R scalars for R * V FMAs. Every 16 k the same pass also sums the squares of the R rows
/// (one vector load each: the norms cost no second pass) and prefetches the next tile's rows at that depth, so
/// that reading A from memory overlaps the FMAs instead of alternating with them. The tile is scaled by
/// inv_a[r] * inv_b and stored as m values per output row.
template <int V, int R>
void few_columns_tile(const float* const* rows, std::int64_t next, std::int64_t d, const float* __restrict bp,
                      const float* inv_b, std::int64_t m, float* out, std::int64_t ldo, RangeFlag& out_of_range) {
    constexpr std::int64_t W = 16 * V;
    __m512 acc[R][V], sq[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
        sq[r] = _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    }
    auto step = [&](std::int64_t k) {
        __m512 bv[V];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) bv[v] = _mm512_load_ps(bp + k * W + 16 * v);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const __m512 av = _mm512_set1_ps(rows[r][k]);
#pragma GCC unroll 4
            for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    };
    std::int64_t k0 = 0;
    for (; k0 + 16 <= d; k0 += 16) {
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(rows[r] + next + k0), _MM_HINT_T0);
            const __m512 x = _mm512_loadu_ps(rows[r] + k0);
            sq[r] = _mm512_fmadd_ps(x, x, sq[r]);
        }
#pragma GCC unroll 16
        for (int k = 0; k < 16; ++k) step(k0 + k);
    }
    if (k0 < d) {
        const __mmask16 km = first_lanes(d - k0);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const __m512 x = _mm512_maskz_loadu_ps(km, rows[r] + k0);
            sq[r] = _mm512_fmadd_ps(x, x, sq[r]);
        }
        for (std::int64_t k = k0; k < d; ++k) step(k);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
        const float inv_a = inverse_norm<float>(_mm512_reduce_add_ps(sq[r]), rows[r], d, 1, out_of_range);
        const __m512 ar = _mm512_set1_ps(inv_a);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) {
            const __mmask16 mask = first_lanes(m - 16 * v);
            const __m512 scale = _mm512_mul_ps(ar, _mm512_load_ps(inv_b + 16 * v));
            _mm512_mask_storeu_ps(out + r * ldo + 16 * v, mask, _mm512_mul_ps(acc[r][v], scale));
        }
    }
}

/// The whole call for V vectors of B rows (m <= 16 V): B packed once, A's rows in tiles of R on all threads (a
/// short last tile one row at a time).
template <int V, int R>
void few_columns(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb, std::int64_t m,
                 std::int64_t d, float* out, std::int64_t ldo, RangeFlag& out_of_range) {
    constexpr std::int64_t W = 16 * V;
    Scratch<float> packed, inv;
    float* const bp = packed.get(static_cast<std::size_t>(d * W));
    float* const inv_b = inv.get(W);
    for (std::int64_t s = 0; s < W; ++s) {
        double sum = 0.0;
        for (std::int64_t k = 0; k < d; ++k) {
            const float x = s < m ? b[s * ldb + k] : 0.0f;
            bp[k * W + s] = x;
            sum += static_cast<double>(x) * static_cast<double>(x);
        }
        inv_b[s] = s < m ? inverse_norm<float>(sum, b + s * ldb, d, 1, out_of_range) : 0.0f;
    }
    const std::int64_t full = n / R;  // tiles of R rows
    parallel_for(full, std::max<std::int64_t>(1, (std::int64_t{1} << 16) / (R * d)), [&](std::int64_t t0, std::int64_t t1) {
        const float* rows[R];
        for (std::int64_t t = t0; t < t1; ++t) {
            const std::int64_t i0 = t * R;
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) rows[r] = a + (i0 + r) * lda;
            const std::int64_t next = t + 1 < t1 ? R * lda : 0;  // the next tile's rows, prefetched meanwhile
            few_columns_tile<V, R>(rows, next, d, bp, inv_b, m, out + i0 * ldo, ldo, out_of_range);
        }
    });
    for (std::int64_t i = full * R; i < n; ++i) {
        const float* row = a + i * lda;
        few_columns_tile<V, 1>(&row, 0, d, bp, inv_b, m, out + i * ldo, ldo, out_of_range);
    }
}

/// The packed GEMM of packed_cosine, or with sel (one TopkRows per worker slot, nsel of them) packed_topk:
/// the same loops, but the last depth block of every tile is offered to the worker's TopkRows instead of being
/// stored (with more than one depth block, the partial sums go to a per-worker chunk buffer instead of out).
void run_packed(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                std::int64_t m, std::int64_t d, float* out, std::int64_t ldo, TopkRows* sel, std::int64_t nsel,
                RangeFlag& out_of_range) {
    const DepthBlocks depth(d);
    const std::int64_t n_panels = (n + kMR - 1) / kMR;

    // 1. A: packed once (every depth block), with its inverse norms; a panel per task.
    thread_local AScratch a_scratch;
    float* const ap = a_scratch.packed.get(static_cast<std::size_t>(n_panels * kMR * d));
    float* const inv_a = a_scratch.inv.get(static_cast<std::size_t>(n_panels * kMR));
    parallel_for(n_panels, std::max<std::int64_t>(1, (std::int64_t{1} << 18) / (kMR * d)),
                 [&](std::int64_t q0, std::int64_t q1) {
                     for (std::int64_t q = q0; q < q1; ++q) {
                         const std::int64_t i0 = q * kMR, rows = std::min(kMR, n - i0);
                         for (std::int64_t r = 0; r < kMR; ++r) {
                             if (r >= rows) {  // padding rows of the last panel
                                 inv_a[i0 + r] = 0.0f;
                                 continue;
                             }
                             const float* x = a + (i0 + r) * lda;
                             double s = 0.0;
#pragma omp simd reduction(+ : s)
                             for (std::int64_t k = 0; k < d; ++k)
                                 s += static_cast<double>(x[k]) * static_cast<double>(x[k]);
                             inv_a[i0 + r] = inverse_norm<float>(s, x, d, 1, out_of_range);
                         }
                         for (std::int64_t p = 0; p < depth.npc; ++p) {
                             const std::int64_t kc = depth.size(p, d);
                             float* dst = ap + depth.begin(p) * n_panels * kMR + q * kc * kMR;
                             pack_a_panel(a + i0 * lda, lda, rows, depth.begin(p), kc, dst);
                         }
                     }
                 });

    // 2. B in chunks of nc rows, a chunk per task: pack (summing norms), then sweep A's panels block by block.
    const bool select = sel != nullptr;
    const std::int64_t threads = select ? nsel : max_threads();  // parallel_for runs at most this many f at once
    const std::int64_t nc = std::clamp<std::int64_t>((m + 2 * threads - 1) / (2 * threads) + kNR - 1, kNR, kNC) /
                            kNR * kNR;
    const std::int64_t n_chunks = (m + nc - 1) / nc;
    const std::int64_t mc_panels =
        std::max<std::int64_t>(1, static_cast<std::int64_t>(kABlockBytes / (sizeof(float) * kMR * depth.kc)));
    const bool stream = !select &&
                        static_cast<std::size_t>(n) * static_cast<std::size_t>(m) * sizeof(float) > kStreamBytes &&
                        reinterpret_cast<std::uintptr_t>(out) % 64 == 0 && ldo % 16 == 0;

    // One B scratch per thread that can run, taken and sized here: an allocation failure throws in the caller
    // (a MemoryError in Python), never inside a worker thread. Slot t pairs B scratch t with sel[t] (top-k).
    const std::int64_t n_slots = std::min(threads, n_chunks);
    std::vector<std::unique_ptr<BScratch>> slots;
    std::vector<Scratch<float>> partial(select ? static_cast<std::size_t>(n_slots) : 0);  // top-k, depth > kKC
    std::vector<std::int64_t> free_slots;
    for (std::int64_t t = 0; t < n_slots; ++t) {
        slots.push_back(scratch_pool().acquire());
        slots.back()->packed.get(static_cast<std::size_t>(nc * depth.kc));
        slots.back()->inv.get(static_cast<std::size_t>(nc));
        slots.back()->sums.resize(static_cast<std::size_t>(nc));
        if (select) partial[t].get(static_cast<std::size_t>(depth.npc > 1 ? n_panels * kMR * nc : 1));
        free_slots.push_back(t);
    }
    std::mutex slots_mu;
    parallel_for_on(n_slots, n_chunks, 1, [&](std::int64_t c0, std::int64_t c1) {  // never more f than slots
        std::int64_t slot;
        {
            std::lock_guard<std::mutex> lock(slots_mu);
            slot = free_slots.back();
            free_slots.pop_back();
        }
        BScratch* const s = slots[slot].get();
        float* const bp = s->packed.get(static_cast<std::size_t>(nc * depth.kc));  // sized: no allocation
        float* const inv_b = s->inv.get(static_cast<std::size_t>(nc));
        for (std::int64_t c = c0; c < c1; ++c) {
            const std::int64_t j0 = c * nc, cols_chunk = std::min(nc, m - j0);
            const std::int64_t b_panels = (cols_chunk + kNR - 1) / kNR;
            // The chunk's output columns: out's, or (top-k) the worker's own buffer for the partial sums.
            float* const chunk_out = select ? partial[slot].data() : out + j0;
            const std::int64_t chunk_ldo = select ? nc : ldo;
            std::fill(s->sums.begin(), s->sums.begin() + nc, 0.0);
            for (std::int64_t p = 0; p < depth.npc; ++p) {
                const std::int64_t k0 = depth.begin(p), kc = depth.size(p, d);
                const bool last = p + 1 == depth.npc;
                const float* const ap_block = ap + k0 * n_panels * kMR;
                for (std::int64_t q0 = 0; q0 < n_panels; q0 += mc_panels) {
                    const std::int64_t q1 = std::min(n_panels, q0 + mc_panels);
                    for (std::int64_t t = 0; t < b_panels; ++t) {
                        const std::int64_t cols = std::min(kNR, cols_chunk - t * kNR);
                        float* const bpt = bp + t * kc * kNR;
                        RowPrefetcher next;  // raw rows of the next panel, fetched while this one computes
                        if (q0 == 0) {  // first A block: pack this panel just in time (later blocks reuse it)
                            double* sums = s->sums.data() + t * kNR;
                            pack_b_panel(b + (j0 + t * kNR) * ldb, ldb, cols, k0, kc, bpt, sums);
                            if (last)
                                for (std::int64_t j = 0; j < kNR; ++j)
                                    inv_b[t * kNR + j] =
                                        j < cols ? inverse_norm<float>(sums[j], b + (j0 + t * kNR + j) * ldb, d, 1,
                                                                       out_of_range)
                                                 : 0.0f;
                            if (t + 1 < b_panels)
                                next = RowPrefetcher(b + (j0 + (t + 1) * kNR) * ldb + k0, ldb,
                                                     std::min(kNR, cols_chunk - (t + 1) * kNR), kc, q1 - q0);
                        }
                        const Epilogue e{p > 0, last, last && stream && cols == kNR};
                        for (std::int64_t q = q0; q < q1; ++q) {
                            next.step();
                            const std::int64_t rows = std::min(kMR, n - q * kMR);
                            const SelectTo to{select ? &sel[slot] : nullptr, q * kMR, j0 + t * kNR};
                            micro_kernel_for(rows)(kc, ap_block + q * kc * kMR, bpt,
                                                   chunk_out + q * kMR * chunk_ldo + t * kNR, chunk_ldo, cols, e,
                                                   inv_a + q * kMR, inv_b + t * kNR, select ? &to : nullptr);
                        }
                    }
                }
            }
        }
        if (stream) _mm_sfence();  // streaming stores visible before the caller reads the output
        std::lock_guard<std::mutex> lock(slots_mu);
        free_slots.push_back(slot);
    });
    for (auto& slot : slots) scratch_pool().release(std::move(slot));
    a_scratch.packed.trim();
    a_scratch.inv.trim();
}

}  // namespace

void packed_cosine(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                   std::int64_t m, std::int64_t d, float* out, std::int64_t ldo, RangeFlag& out_of_range) {
    run_packed(a, lda, n, b, ldb, m, d, out, ldo, nullptr, 0, out_of_range);
}

void packed_topk(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                 std::int64_t m, std::int64_t d, TopkRows* sel, std::int64_t nsel, RangeFlag& out_of_range) {
    run_packed(a, lda, n, b, ldb, m, d, nullptr, 0, sel, nsel, out_of_range);
}

std::size_t packed_topk_bytes(std::int64_t n, std::int64_t d, std::int64_t nsel) {
    const DepthBlocks depth(d);
    const std::size_t rows = static_cast<std::size_t>((n + kMR - 1) / kMR * kMR);
    const std::size_t f = sizeof(float), slots = static_cast<std::size_t>(nsel);
    const std::size_t a_bytes = rows * static_cast<std::size_t>(d) * f + rows * f;
    const std::size_t b_slot = static_cast<std::size_t>(kNC * depth.kc) * f + static_cast<std::size_t>(kNC) * 12;
    const std::size_t partial_slot = depth.npc > 1 ? rows * static_cast<std::size_t>(kNC) * f : f;
    return a_bytes + slots * (b_slot + partial_slot);
}

void few_columns_cosine(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                        std::int64_t m, std::int64_t d, float* out, std::int64_t ldo, RangeFlag& out_of_range) {
    if (m <= 16) return few_columns<1, 8>(a, lda, n, b, ldb, m, d, out, ldo, out_of_range);
    if (m <= 32) return few_columns<2, 8>(a, lda, n, b, ldb, m, d, out, ldo, out_of_range);
    if (m <= 48) return few_columns<3, 5>(a, lda, n, b, ldb, m, d, out, ldo, out_of_range);
    few_columns<4, 4>(a, lda, n, b, ldb, m, d, out, ldo, out_of_range);
}

#if defined(MB_PACKED_RUNTIME_CHECK)
#pragma GCC diagnostic pop
#pragma GCC pop_options  // back to the build's own target: what follows runs on any CPU

namespace {
bool cpu_runs_packed() {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
}  // namespace
#else
namespace {
bool cpu_runs_packed() { return true; }  // compiled for AVX-512: the build already requires it
}  // namespace
#endif

#else  // no AVX-512 in this build: the CBLAS strategies do the work

namespace {
bool cpu_runs_packed() { return false; }
}  // namespace

void packed_cosine(const float*, std::int64_t, std::int64_t, const float*, std::int64_t, std::int64_t, std::int64_t,
                   float*, std::int64_t, RangeFlag&) {
    std::abort();  // unreachable: callers check packed_gemm_available()
}

void few_columns_cosine(const float*, std::int64_t, std::int64_t, const float*, std::int64_t, std::int64_t,
                        std::int64_t, float*, std::int64_t, RangeFlag&) {
    std::abort();  // unreachable: callers check packed_gemm_available()
}

void packed_topk(const float*, std::int64_t, std::int64_t, const float*, std::int64_t, std::int64_t, std::int64_t,
                 TopkRows*, std::int64_t, RangeFlag&) {
    std::abort();  // unreachable: callers check packed_gemm_available()
}

std::size_t packed_topk_bytes(std::int64_t, std::int64_t, std::int64_t) { return 0; }

#endif

bool packed_gemm_available() {
    // METRIC_BINDINGS_DISABLE_PACKED=1 runs the fallbacks on an AVX-512 CPU too (to test them, or to compare).
    static const bool available = [] {
        const char* off = std::getenv("METRIC_BINDINGS_DISABLE_PACKED");
        return cpu_runs_packed() && !(off != nullptr && *off != '\0' && std::string(off) != "0");
    }();
    return available;
}

}  // namespace metric_bindings::detail
