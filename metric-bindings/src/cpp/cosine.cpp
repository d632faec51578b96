// Implementation of cosine.hpp. See the header for the semantics; this file explains the "why" of the speed.
//
// Full matrix: the work is one GEMM (2 N M D flops) plus the norms. Four strategies, picked by size and dtype
// (Strategy::Auto, measured in bench/):
//  * Fused: one side has few rows (one query against many items). BLAS is memory-bound and poorly blocked there
//    and would need a second pass for the norms, so a hand-written kernel reads the large side once, computing
//    each row's norm and its dots with the few small rows together.
//  * PackedGemm (packed_gemm.cpp), float32 on a CPU with AVX-512: for large work our own blocked GEMM with the
//    norms of B summed while it is packed and the scaling applied as the output is stored; for many rows
//    against 8-64 its few-columns kernel (B packed in cache, A streamed once). No BLAS.
// Each kernel is one function (cosine_fused, cosine_packed, ...); kernel_fn is the table, and one function,
// decide, picks the kernel of every call (full matrix or top-k's tiles, Auto or a requested strategy) from one
// table of thresholds, kThresholds.
// Rows whose magnitude the kernels cannot handle (norms outside SafeRange) raise a RangeFlag; run_rescuing then
// redoes the work on rows rescaled by a power of two.
//  * NormalizeFirst: A and B are small next to the output (square-ish shapes): copy them with unit rows and
//    run one GEMM; no pass over the output at all.
//  * ScaleOutput: the rest (e.g. 256 queries x 100k items): inverse norms, one GEMM on the raw inputs,
//    one scaling pass over the output. No normalised copy of B is ever made.
// Our own passes run on std::threads, but never between two BLAS calls: OpenBLAS workers spin-wait for a while
// after each call, and sharing the cores with them collapses throughput on a busy machine.
#include "cosine.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "blas.hpp"
#include "kernel_common.hpp"
#include "packed_gemm.hpp"
#include "topk_select.hpp"

namespace metric_bindings {
namespace {

using detail::better;
using detail::inverse_norm;
using detail::parallel_for;
using detail::RangeFlag;
using detail::Scratch;

constexpr std::int64_t kBlasMax = std::numeric_limits<int>::max();  // 32-bit BLAS integers
constexpr std::int64_t kParallelGrain = std::int64_t{1} << 19;  // elements per thread before we use threads
constexpr std::size_t kTileBytes = std::size_t{32} << 20;  // GEMM operand tile: only huge inputs are split
constexpr std::int64_t kPrefetchBytes = 4096;  // streaming kernels: how far ahead rows are prefetched
constexpr std::size_t kPackedScratchBytes = std::size_t{4} << 20;  // top-k: the packed GEMM's B panels (2 x 1 MiB)
constexpr std::size_t kFusedScoreBytes = std::size_t{1} << 20;  // top-k, few queries: scores per B tile
constexpr std::int64_t kSelectBlock = 64;  // top-k selection: scores tested against the heap's worst at once

// ---------------------------------------------------------------- BLAS operands

/// A matrix as BLAS sees it: element (i, j) is ptr[i * ld + j] (row-major) or ptr[i + j * ld] (column-major).
template <typename T>
struct Operand {
    const T* ptr = nullptr;
    std::int64_t ld = 1;
    bool col_major = false;
    const T* row(std::int64_t i) const { return col_major ? ptr + i : ptr + i * ld; }
};

/// True (and fills op) when BLAS can read v in place: unit stride along one axis, a leading dimension along the
/// other that is large enough and fits in a 32-bit int. A transposed C array is column-major: no copy.
template <typename T>
bool blas_layout(const MatrixView<T>& v, Operand<T>& op) {
    const std::int64_t r = v.rows, c = v.cols, rs = v.row_stride, cs = v.col_stride;
    if (c <= 1 || cs == 1) {  // row-major candidate
        const std::int64_t ld = (r <= 1) ? std::max<std::int64_t>(c, 1) : rs;
        if (ld >= std::max<std::int64_t>(c, 1) && ld <= kBlasMax) {
            op = {v.data, ld, false};
            return true;
        }
    }
    if (r <= 1 || rs == 1) {  // column-major candidate
        const std::int64_t ld = (c <= 1) ? std::max<std::int64_t>(r, 1) : cs;
        if (ld >= std::max<std::int64_t>(r, 1) && ld <= kBlasMax) {
            op = {v.data, ld, true};
            return true;
        }
    }
    return false;
}

/// True when every row of v is contiguous (unit column stride, or at most one column): the layout the fused
/// kernel and the packed GEMM read in place.
template <typename T>
bool rows_contiguous(const MatrixView<T>& v) {
    return v.col_stride == 1 || v.cols <= 1;
}

/// Rows [r0, r1) of v copied into buf as a packed row-major matrix (any source strides).
template <typename T>
const T* pack_rows(const MatrixView<T>& v, std::int64_t r0, std::int64_t r1, Scratch<T>& buf) {
    const std::int64_t n = r1 - r0, d = v.cols;
    buf.get(static_cast<std::size_t>(n * d));
    for (std::int64_t i = 0; i < n; ++i) {
        const T* src = v.data + (r0 + i) * v.row_stride;
        T* dst = buf.data() + i * d;
        for (std::int64_t j = 0; j < d; ++j) dst[j] = src[j * v.col_stride];
    }
    return buf.data();
}

/// Rows [r0, r1) of v as a BLAS operand: in place when possible, else copied (row-major) into buf.
template <typename T>
Operand<T> rows_operand(const MatrixView<T>& v, std::int64_t r0, std::int64_t r1, Scratch<T>& buf) {
    Operand<T> op;
    if (blas_layout(v, op)) {
        op.ptr = op.row(r0);
        return op;
    }
    return {pack_rows(v, r0, r1, buf), std::max<std::int64_t>(v.cols, 1), false};
}

/// inv[i] = 1 / |row i| for the first n rows of op (d columns), accumulated in double; rows outside the safe
/// range raise flag (see inverse_norm).
template <typename T>
void inverse_norms(const Operand<T>& op, std::int64_t n, std::int64_t d, T* inv, RangeFlag& flag,
                   bool threads = true) {
    if (n <= 0) return;
    const std::int64_t grain =
        threads ? std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(d, 1)) : n + 1;
    if (!op.col_major) {
        parallel_for(n, grain, [&](std::int64_t b, std::int64_t e) {
            for (std::int64_t i = b; i < e; ++i) {
                const T* x = op.ptr + i * op.ld;
                double s = 0.0;
#pragma omp simd reduction(+ : s)
                for (std::int64_t j = 0; j < d; ++j) s += static_cast<double>(x[j]) * static_cast<double>(x[j]);
                inv[i] = inverse_norm<T>(s, x, d, 1, flag);
            }
        });
    } else {
        parallel_for(n, std::max<std::int64_t>(grain, 64), [&](std::int64_t b, std::int64_t e) {
            std::vector<double> acc(static_cast<std::size_t>(e - b), 0.0);
            double* s = acc.data();
            for (std::int64_t j = 0; j < d; ++j) {
                const T* x = op.ptr + j * op.ld + b;
#pragma omp simd
                for (std::int64_t i = 0; i < e - b; ++i) s[i] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
            }
            for (std::int64_t i = b; i < e; ++i) inv[i] = inverse_norm<T>(s[i - b], op.ptr + i, d, op.ld, flag);
        });
    }
}

/// C (n x m, ldc) = A_rows (n x d) * B_rows (m x d)^T, one CBLAS call.
template <typename T>
void gemm_abt(const Operand<T>& a, const Operand<T>& b, std::int64_t n, std::int64_t m, std::int64_t d, T* c,
              std::int64_t ldc) {
    if (n == 0 || m == 0) return;
    if (d == 0) {  // BLAS would not touch C with k = 0 and beta = 0 on every implementation: do it here
        for (std::int64_t i = 0; i < n; ++i) std::fill(c + i * ldc, c + i * ldc + m, T(0));
        return;
    }
    const auto ta = a.col_major ? CblasTrans : CblasNoTrans;
    const auto tb = b.col_major ? CblasNoTrans : CblasTrans;
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(d);
    const int lda = static_cast<int>(a.ld), ldb = static_cast<int>(b.ld), ldcc = static_cast<int>(ldc);
    if constexpr (std::is_same_v<T, float>) {
        MB_CBLAS(sgemm)(CblasRowMajor, ta, tb, M, N, K, 1.0f, a.ptr, lda, b.ptr, ldb, 0.0f, c, ldcc);
    } else {
        MB_CBLAS(dgemm)(CblasRowMajor, ta, tb, M, N, K, 1.0, a.ptr, lda, b.ptr, ldb, 0.0, c, ldcc);
    }
}

/// c[i, j] *= ia[i] * ib[j] over an n x m tile.
template <typename T>
void scale_tile(T* c, std::int64_t ldc, std::int64_t n, std::int64_t m, const T* ia, const T* ib) {
    parallel_for(n, std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(m, 1)),
                 [&](std::int64_t b, std::int64_t e) {
                     for (std::int64_t i = b; i < e; ++i) {
                         T* row = c + i * ldc;
                         const T s = ia[i];
#pragma omp simd
                         for (std::int64_t j = 0; j < m; ++j) row[j] = row[j] * s * ib[j];
                     }
                 });
}

template <typename T>
std::int64_t tile_rows(std::int64_t d, std::int64_t total, std::size_t bytes = kTileBytes) {
    const std::int64_t r = static_cast<std::int64_t>(bytes / (sizeof(T) * static_cast<std::size_t>(std::max<std::int64_t>(d, 1))));
    return std::clamp<std::int64_t>(r, 1, std::max<std::int64_t>(total, 1));
}

/// Writes a copy of v with unit rows (row-major, packed) into out; stops early if a row raises flag.
template <typename T>
void normalized_copy(const MatrixView<T>& v, Scratch<T>& out, RangeFlag& flag) {
    const std::int64_t n = v.rows, d = v.cols;
    out.get(static_cast<std::size_t>(std::max<std::int64_t>(n * d, 1)));
    std::vector<T> inv(static_cast<std::size_t>(n));
    Scratch<T> scratch;
    const Operand<T> op = rows_operand(v, 0, n, scratch);
    inverse_norms(op, n, d, inv.data(), flag);
    if (flag.load(std::memory_order_relaxed)) return;
    parallel_for(n, std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(d, 1)),
                 [&](std::int64_t b, std::int64_t e) {
                     for (std::int64_t i = b; i < e; ++i) {
                         T* dst = out.data() + i * d;
                         const T s = inv[i];
                         if (!op.col_major) {
                             const T* src = op.ptr + i * op.ld;
#pragma omp simd
                             for (std::int64_t j = 0; j < d; ++j) dst[j] = src[j] * s;
                         } else {
                             for (std::int64_t j = 0; j < d; ++j) dst[j] = op.ptr[i + j * op.ld] * s;
                         }
                     }
                 });
}

/// Per-thread buffers for the normalised copies, reused across calls (the rule of detail::Scratch);
/// thread_local keeps concurrent callers (the GIL is released) apart.
template <typename T>
struct NormalizeScratch {
    Scratch<T> a, b;
    void trim() {
        a.trim();
        b.trim();
    }
};

// ---------------------------------------------------------------- streaming the large side

/// The kernels that stream rows from memory once (fused, paired) prefetch the rows about kPrefetchBytes ahead,
/// so that the loads overlap the arithmetic: the hardware prefetcher alone left about a third of the memory
/// bandwidth unused (bench/).
template <typename T>
std::int64_t rows_ahead(std::int64_t d) {
    return std::max<std::int64_t>(2, kPrefetchBytes / std::max<std::int64_t>(d * std::int64_t{sizeof(T)}, 1));
}

/// Prefetches the d contiguous elements of a row, one request per cache line.
template <typename T>
inline void prefetch_row(const T* row, std::int64_t d) {
    for (std::int64_t k = 0; k < d; k += 64 / std::int64_t{sizeof(T)}) __builtin_prefetch(row + k);
}

// ---------------------------------------------------------------- fused kernel for a small side

/// One pass over the big side for shapes where one side has only a few rows (one query against many items, or
/// many items against a few classes): BLAS is memory-bound and badly blocked there, and would need a second
/// pass for the norms. Each big row is read once, its squared norm and its dots with 4 small rows at a time are
/// accumulated in registers; the small rows (contiguous, a few KiB) stay in L1/L2.
/// out(i, s) = out[i * os_big + s * os_small].
template <typename T>
void fused_small(const MatrixView<T>& big, const T* small, const T* inv_small, std::int64_t ns, std::int64_t d,
                 T* out, std::int64_t os_big, std::int64_t os_small, RangeFlag& flag) {
    const std::int64_t grain = std::max<std::int64_t>(2, kParallelGrain / std::max<std::int64_t>(d * ns, 1));
    const std::int64_t ahead = rows_ahead<T>(d);
    parallel_for(big.rows, grain, [&](std::int64_t lo, std::int64_t hi) {
        std::int64_t i = lo;
        // Two big rows at a time against four small rows: 6 loads feed 8 FMAs (register blocking).
        for (; i + 2 <= hi; i += 2) {
            const T* x = big.data + i * big.row_stride;
            const T* z = x + big.row_stride;
            if (i + ahead + 1 < big.rows) {
                prefetch_row(x + ahead * big.row_stride, d);
                prefetch_row(z + ahead * big.row_stride, d);
            }
            T* o = out + i * os_big;
            T* p = o + os_big;
            T sx = 0, sz = 0;
#pragma omp simd reduction(+ : sx, sz)
            for (std::int64_t k = 0; k < d; ++k) {
                sx += x[k] * x[k];
                sz += z[k] * z[k];
            }
            const T ix = inverse_norm<T>(static_cast<double>(sx), x, d, 1, flag);
            const T iz = inverse_norm<T>(static_cast<double>(sz), z, d, 1, flag);
            std::int64_t s = 0;
            for (; s + 4 <= ns; s += 4) {
                const T *y0 = small + s * d, *y1 = y0 + d, *y2 = y1 + d, *y3 = y2 + d;
                T a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
                for (std::int64_t k = 0; k < d; ++k) {
                    const T xv = x[k], zv = z[k];
                    a0 += xv * y0[k];
                    a1 += xv * y1[k];
                    a2 += xv * y2[k];
                    a3 += xv * y3[k];
                    b0 += zv * y0[k];
                    b1 += zv * y1[k];
                    b2 += zv * y2[k];
                    b3 += zv * y3[k];
                }
                o[(s + 0) * os_small] = a0 * ix * inv_small[s + 0];
                o[(s + 1) * os_small] = a1 * ix * inv_small[s + 1];
                o[(s + 2) * os_small] = a2 * ix * inv_small[s + 2];
                o[(s + 3) * os_small] = a3 * ix * inv_small[s + 3];
                p[(s + 0) * os_small] = b0 * iz * inv_small[s + 0];
                p[(s + 1) * os_small] = b1 * iz * inv_small[s + 1];
                p[(s + 2) * os_small] = b2 * iz * inv_small[s + 2];
                p[(s + 3) * os_small] = b3 * iz * inv_small[s + 3];
            }
            for (; s < ns; ++s) {
                const T* y = small + s * d;
                T a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
                for (std::int64_t k = 0; k < d; ++k) {
                    a += x[k] * y[k];
                    b += z[k] * y[k];
                }
                o[s * os_small] = a * ix * inv_small[s];
                p[s * os_small] = b * iz * inv_small[s];
            }
        }
        for (; i < hi; ++i) {  // odd row left over
            const T* x = big.data + i * big.row_stride;
            T* o = out + i * os_big;
            T ss = 0;
#pragma omp simd reduction(+ : ss)
            for (std::int64_t k = 0; k < d; ++k) ss += x[k] * x[k];
            const T ix = inverse_norm<T>(static_cast<double>(ss), x, d, 1, flag);
            for (std::int64_t s = 0; s < ns; ++s) {
                const T* y = small + s * d;
                T a = 0;
#pragma omp simd reduction(+ : a)
                for (std::int64_t k = 0; k < d; ++k) a += x[k] * y[k];
                o[s * os_small] = a * ix * inv_small[s];
            }
        }
    });
}

// ---------------------------------------------------------------- paired

/// The power of two e that brings a row's largest magnitude into [1, 2) (0 for a zero row); sets nonfinite if the
/// row holds inf or NaN. Scaling by 2^e is exact, and cosines do not depend on scale.
template <typename T>
int row_exponent(const T* x, std::int64_t d, std::int64_t stride, bool& nonfinite) {
    double m = 0.0;
    for (std::int64_t k = 0; k < d; ++k) {
        const double v = std::fabs(static_cast<double>(x[k * stride]));
        if (!std::isfinite(v)) {
            nonfinite = true;
            return 0;
        }
        m = std::max(m, v);
    }
    return m == 0.0 ? 0 : -std::ilogb(m);
}

/// cos(x, y) for the rare pairs the fast pass cannot finish (a zero row, inf/NaN, or a norm outside the safe
/// range): each row rescaled by its own power of two, accumulated in double.
template <typename T>
[[gnu::cold, gnu::noinline]] T rescaled_pair(const T* x, std::int64_t xs, const T* y, std::int64_t ys,
                                             std::int64_t d) {
    bool nonfinite = false;
    const int ex = row_exponent(x, d, xs, nonfinite), ey = row_exponent(y, d, ys, nonfinite);
    if (nonfinite) return std::numeric_limits<T>::quiet_NaN();
    double dot = 0.0, na = 0.0, nb = 0.0;
    for (std::int64_t k = 0; k < d; ++k) {
        const double u = std::ldexp(static_cast<double>(x[k * xs]), ex);
        const double v = std::ldexp(static_cast<double>(y[k * ys]), ey);
        dot += u * v;
        na += u * u;
        nb += v * v;
    }
    if (na == 0.0 || nb == 0.0) return T(0);
    return static_cast<T>(dot / (std::sqrt(na) * std::sqrt(nb)));
}

/// cos(x, y) from the fast pass's sums (in T); x and y (d elements, strides xs and ys) are read again only in the
/// rare cases (see rescaled_pair).
template <typename T>
T finish_pair(T dot, T na, T nb, const T* x, std::int64_t xs, const T* y, std::int64_t ys, std::int64_t d) {
    if (detail::in_safe_range<T>(na) && detail::in_safe_range<T>(nb))
        return static_cast<T>(static_cast<double>(dot) /
                              (std::sqrt(static_cast<double>(na)) * std::sqrt(static_cast<double>(nb))));
    return rescaled_pair(x, xs, y, ys, d);
}

/// v with every row whose norm is outside the safe range multiplied by 2^row_exponent (its largest magnitude
/// then lies in [1, 2), so its norm in [1, 2 sqrt(D)]), as a packed row-major copy in buf. Other rows (also zero
/// rows and rows holding inf or NaN) are copied unchanged. Only called after a kernel raised its RangeFlag.
template <typename T>
MatrixView<T> rescaled_rows(const MatrixView<T>& v, Scratch<T>& buf) {
    const std::int64_t n = v.rows, d = v.cols;
    buf.get(static_cast<std::size_t>(std::max<std::int64_t>(n * d, 1)));
    parallel_for(n, std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(d, 1)),
                 [&](std::int64_t lo, std::int64_t hi) {
                     for (std::int64_t i = lo; i < hi; ++i) {
                         const T* src = v.data + i * v.row_stride;
                         T* dst = buf.data() + i * d;
                         bool nonfinite = false;
                         const int e = row_exponent(src, d, v.col_stride, nonfinite);
                         double s = 0.0;  // sum of squares of the scaled row: every term <= 4
                         for (std::int64_t k = 0; k < d; ++k) {
                             const double u = std::ldexp(static_cast<double>(src[k * v.col_stride]), e);
                             s += u * u;
                         }
                         const bool rescale = !nonfinite && s > 0.0 && !detail::in_safe_range<T>(std::ldexp(s, -2 * e));
                         for (std::int64_t k = 0; k < d; ++k)
                             dst[k] = rescale ? std::ldexp(src[k * v.col_stride], e) : src[k * v.col_stride];
                     }
                 });
    return MatrixView<T>::row_major(buf.data(), n, d);
}

// ---------------------------------------------------------------- top-k

// The ranking (`better`: NaN first, then larger value, then smaller index) is in topk_select.hpp.

/// Min-heap (root = worst kept) stored in the output row itself.
template <typename T>
void sift_down(T* v, std::int64_t* idx, std::int64_t size, std::int64_t pos) {
    for (;;) {
        std::int64_t l = 2 * pos + 1, worst = pos;
        if (l < size && better(v[worst], idx[worst], v[l], idx[l])) worst = l;
        if (l + 1 < size && better(v[worst], idx[worst], v[l + 1], idx[l + 1])) worst = l + 1;
        if (worst == pos) return;
        std::swap(v[pos], v[worst]);
        std::swap(idx[pos], idx[worst]);
        pos = worst;
    }
}

template <typename T>
void sift_up(T* v, std::int64_t* idx, std::int64_t pos) {
    while (pos > 0) {
        const std::int64_t parent = (pos - 1) / 2;
        if (!better(v[parent], idx[parent], v[pos], idx[pos])) return;
        std::swap(v[pos], v[parent]);
        std::swap(idx[pos], idx[parent]);
        pos = parent;
    }
}

// ---------------------------------------------------------------- strategies

/// One strategy: out (n x m, leading dimension ldo) = the cosines of the rows of a and b, arguments already
/// checked, n, m >= 1. A row outside the safe range raises flag: the output is then not valid and
/// run_rescuing redoes it on rescaled rows.
template <typename T>
using StrategyFn = void (*)(const MatrixView<T>&, const MatrixView<T>&, T*, std::int64_t, RangeFlag&);

/// Fused: the side with fewer rows is "small": copied contiguous (a few KiB) with its inverse norms. The big side
/// is read in place if its rows are contiguous, else one row-major copy is made first.
template <typename T>
void cosine_fused(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo, RangeFlag& flag) {
    const std::int64_t n = a.rows, m = b.rows, d = a.cols;
    const bool a_small = n <= m;
    const MatrixView<T>& sv = a_small ? a : b;
    const MatrixView<T>& bv = a_small ? b : a;
    std::vector<T> inv_small(static_cast<std::size_t>(sv.rows));
    Scratch<T> small_buf, big_buf;
    Operand<T> sop = rows_operand(sv, 0, sv.rows, small_buf);
    if (sop.col_major || (sop.ld != d && sv.rows > 1))  // the kernel wants packed rows
        sop = {pack_rows(sv, 0, sv.rows, small_buf), std::max<std::int64_t>(d, 1), false};
    inverse_norms(sop, sv.rows, d, inv_small.data(), flag);
    if (flag.load(std::memory_order_relaxed)) return;
    MatrixView<T> big = bv;
    if (!rows_contiguous(bv)) big = MatrixView<T>::row_major(pack_rows(bv, 0, bv.rows, big_buf), bv.rows, d);
    if (a_small) {
        fused_small(big, sop.ptr, inv_small.data(), n, d, out, 1, ldo, flag);  // big rows are output columns
    } else {
        fused_small(big, sop.ptr, inv_small.data(), m, d, out, ldo, 1, flag);
    }
}

/// NormalizeFirst: A and B copied with unit rows into per-thread scratch, then one GEMM.
template <typename T>
void cosine_normalize(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo, RangeFlag& flag) {
    thread_local NormalizeScratch<T> scratch;
    struct Trim {  // also on an exception
        NormalizeScratch<T>& s;
        ~Trim() { s.trim(); }
    } trim{scratch};
    normalized_copy(a, scratch.a, flag);
    if (flag.load(std::memory_order_relaxed)) return;
    normalized_copy(b, scratch.b, flag);
    if (flag.load(std::memory_order_relaxed)) return;
    const std::int64_t ld = std::max<std::int64_t>(a.cols, 1);
    gemm_abt(Operand<T>{scratch.a.data(), ld, false}, Operand<T>{scratch.b.data(), ld, false}, a.rows, b.rows,
             a.cols, out, ldo);
}

/// ScaleOutput. Three phases, so that our own threads never run between two BLAS calls (OpenBLAS workers
/// spin-wait between calls; interleaving them with our threads collapses on a busy 2-core machine):
///  1. inverse norms of A and B (our threads);  2. one GEMM (BLAS threads);  3. one pass scaling the output
///  by inv_a[i] * inv_b[j] (our threads). No copy of B is ever made unless BLAS cannot read its layout (then
///  one ~32 MiB tile at a time).
template <typename T>
void cosine_scale(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo, RangeFlag& flag) {
    const std::int64_t n = a.rows, m = b.rows, d = a.cols;
    std::vector<T> inv_a(static_cast<std::size_t>(n)), inv_b(static_cast<std::size_t>(m));
    Scratch<T> buf_a, buf_b;
    // GEMM tiles only when a layout needs a copy (bounding the copy); otherwise one call, which was measured
    // faster than tiles of 8 or 32 MiB, e.g. (256, 100000, 512): 612 ms vs 729 / 1221 ms (tile-local scaling).
    Operand<T> probe;
    const bool in_place = blas_layout(a, probe) && blas_layout(b, probe);
    const std::int64_t nb = tile_rows<T>(d, n), mb = tile_rows<T>(d, m);
    for (std::int64_t i0 = 0; i0 < n; i0 += nb)
        inverse_norms(rows_operand(a, i0, std::min(n, i0 + nb), buf_a), std::min(n, i0 + nb) - i0, d,
                      inv_a.data() + i0, flag);
    for (std::int64_t j0 = 0; j0 < m; j0 += mb)
        inverse_norms(rows_operand(b, j0, std::min(m, j0 + mb), buf_b), std::min(m, j0 + mb) - j0, d,
                      inv_b.data() + j0, flag);
    if (flag.load(std::memory_order_relaxed)) return;
    const std::int64_t gn = in_place ? n : nb, gm = in_place ? m : mb;
    for (std::int64_t i0 = 0; i0 < n; i0 += gn) {
        const std::int64_t i1 = std::min(n, i0 + gn);
        const Operand<T> opa = rows_operand(a, i0, i1, buf_a);
        for (std::int64_t j0 = 0; j0 < m; j0 += gm) {
            const std::int64_t j1 = std::min(m, j0 + gm);
            gemm_abt(opa, rows_operand(b, j0, j1, buf_b), i1 - i0, j1 - j0, d, out + i0 * ldo + j0, ldo);
        }
    }
    scale_tile(out, ldo, n, m, inv_a.data(), inv_b.data());
}

/// The kernels of packed_gemm.cpp (float32, where they can run: decide sees to it). Their packing reads rows with
/// unit stride: other layouts get one row-major copy first.
template <typename T, bool FewColumns>
void cosine_packed(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo, RangeFlag& flag) {
    if constexpr (std::is_same_v<T, float>) {
        const std::int64_t n = a.rows, m = b.rows, d = a.cols;
        Scratch<T> buf_a, buf_b;
        const MatrixView<T> ra = rows_contiguous(a) ? a : MatrixView<T>::row_major(pack_rows(a, 0, n, buf_a), n, d);
        const MatrixView<T> rb = rows_contiguous(b) ? b : MatrixView<T>::row_major(pack_rows(b, 0, m, buf_b), m, d);
        if constexpr (FewColumns) {  // many rows against a few: A streamed once, B in cache
            detail::few_columns_cosine(ra.data, ra.row_stride, n, rb.data, rb.row_stride, m, d, out, ldo, flag);
        } else {
            detail::packed_cosine(ra.data, ra.row_stride, n, rb.data, rb.row_stride, m, d, out, ldo, flag);
        }
    } else {
        cosine_scale(a, b, out, ldo, flag);  // unreachable: decide gives the packed kernels float32 only
    }
}

/// The kernels a call can run. A Strategy names what a user asks for; PackedGemm covers two kernels here.
enum class Kernel { Fused, Normalize, Scale, Packed, FewColumns };

/// The table: one function per kernel.
template <typename T>
StrategyFn<T> kernel_fn(Kernel k) {
    switch (k) {
        case Kernel::Fused: return &cosine_fused<T>;
        case Kernel::Normalize: return &cosine_normalize<T>;
        case Kernel::Packed: return &cosine_packed<T, false>;
        case Kernel::FewColumns: return &cosine_packed<T, true>;
        default: return &cosine_scale<T>;
    }
}

/// Every threshold of the choice of kernel, measured with bench/ (docs/performance.md).
struct Thresholds {
    std::int64_t fused_max_rows;     ///< the fused kernel when one side has at most this many rows,
    std::int64_t fused_max_b;        ///< or B has at most this many (OpenBLAS's skinny GEMM is slow there)
    std::int64_t few_columns_min;    ///< float32 on AVX-512: the few-columns kernel for B of [min, max] rows
    std::int64_t few_columns_max;    ///< against more rows of A (1.2x at 8 rows to 2.3x at 64 over fused)
    double packed_min_work;          ///< the packed GEMM from this many multiply-adds N M D (5-40 % over CBLAS),
    double packed_max_a;             ///< while A has at most this many values (it packs all of A first)
    std::size_t topk_packed_budget;  ///< top-k scores with the packed GEMM only within budgets this large
};
constexpr Thresholds kThresholds{8, 32, 8, detail::kFewColumnsMax, double(std::int64_t{1} << 29),
                                 double(std::int64_t{16} << 20), 4 * kPackedScratchBytes};

/// What the choice depends on. topk_budget: 0 for the full matrix, else top-k's memory budget (its tiles).
struct Call {
    std::int64_t n, m, d;
    bool single;           ///< float32
    bool rows_contiguous;  ///< both inputs' rows have unit stride (the packed kernels read them in place)
    std::size_t topk_budget;
};

/// The one function that decides which kernel runs, for every entry point.
Kernel decide(Strategy requested, const Call& c) {
    const Thresholds& t = kThresholds;
    const double work = static_cast<double>(c.n) * static_cast<double>(c.m) * static_cast<double>(c.d);
    const bool packed_runs = c.single && detail::packed_gemm_available() && c.d > 0;
    const bool packed_pays = packed_runs && c.rows_contiguous && work >= t.packed_min_work;
    const bool few_columns_shape = c.m < c.n && c.m <= t.few_columns_max;
    if (c.topk_budget > 0) {  // top-k's tiles: few queries read each B tile once; the packed GEMM if it fits
        if (c.n <= t.fused_max_rows) return Kernel::Fused;
        return packed_pays && c.topk_budget >= t.topk_packed_budget ? Kernel::Packed : Kernel::Scale;
    }
    switch (requested) {
        case Strategy::Fused: return Kernel::Fused;
        case Strategy::NormalizeFirst: return Kernel::Normalize;
        case Strategy::ScaleOutput: return Kernel::Scale;
        case Strategy::PackedGemm:
            return !packed_runs ? Kernel::Scale : few_columns_shape ? Kernel::FewColumns : Kernel::Packed;
        case Strategy::Auto: break;
    }
    // Many rows against 8-64: the few-columns kernel streams A once, register-blocked, FMA-bound. Below 8 rows
    // both it and the fused kernel are memory-bound, and the fused kernel wastes no vector lanes.
    if (packed_runs && c.rows_contiguous && c.m >= t.few_columns_min && few_columns_shape) return Kernel::FewColumns;
    if (std::min(c.n, c.m) <= t.fused_max_rows || c.m <= t.fused_max_b) return Kernel::Fused;
    if (packed_pays && static_cast<double>(c.n) * static_cast<double>(c.d) <= t.packed_max_a) return Kernel::Packed;
    // Normalising copies cost ~2 (N + M) D memory traffic; scaling the output costs ~2 N M (in cache, so less).
    const double copies = static_cast<double>(c.n + c.m) * static_cast<double>(c.d);
    const double output = static_cast<double>(c.n) * static_cast<double>(c.m);
    return copies < output ? Kernel::Normalize : Kernel::Scale;
}

template <typename T>
Call call_of(const MatrixView<T>& a, const MatrixView<T>& b, std::size_t topk_budget = 0) {
    return {a.rows, b.rows, a.cols, std::is_same_v<T, float>, rows_contiguous(a) && rows_contiguous(b), topk_budget};
}

/// Runs a strategy; if a row was outside the safe range (rare: norms beyond 2^+-40 in float32), runs it again on
/// copies of a and b whose such rows are scaled by a power of two. The common case costs nothing extra.
template <typename T>
void run_rescuing(StrategyFn<T> fn, const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo) {
    RangeFlag flag{false};
    fn(a, b, out, ldo, flag);
    if (!flag.load(std::memory_order_relaxed)) return;
    Scratch<T> buf_a, buf_b;
    RangeFlag again{false};  // every rescaled row is in range: never raised
    fn(rescaled_rows(a, buf_a), rescaled_rows(b, buf_b), out, ldo, again);
}

}  // namespace

// ================================================================ public API

Strategy choose_strategy(std::int64_t n, std::int64_t m, std::int64_t d, bool single_precision) {
    switch (decide(Strategy::Auto, Call{n, m, d, single_precision, true, 0})) {
        case Kernel::Fused: return Strategy::Fused;
        case Kernel::Normalize: return Strategy::NormalizeFirst;
        case Kernel::Packed:
        case Kernel::FewColumns: return Strategy::PackedGemm;
        default: return Strategy::ScaleOutput;
    }
}

template <typename T>
void cosine_similarity(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo, Strategy strategy) {
    check_matrix_args("cosine_similarity", a, b);
    const std::int64_t n = a.rows, m = b.rows;
    check_output("cosine_similarity", out, n, m, ldo, 1, n, m);
    if (n == 0 || m == 0) return;
    if (n == 1) ldo = m;  // a single row: its leading dimension is never used, but BLAS wants it >= M
    run_rescuing(kernel_fn<T>(decide(strategy, call_of(a, b))), a, b, out, ldo);
}

template <typename T>
void paired_cosine_similarity(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t out_stride) {
    check_paired_args(a, b);
    const std::int64_t n = a.rows, d = a.cols;
    check_output("paired_cosine_similarity", out, n, out_stride, n);
    if (n == 0) return;
    const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(d, 1));
    if (a.col_stride == 1 && b.col_stride == 1) {  // rows contiguous: one fused, vectorised pass per row
        const std::int64_t ahead = rows_ahead<T>(2 * d);  // two streams
        parallel_for(n, grain, [&](std::int64_t lo, std::int64_t hi) {
            for (std::int64_t i = lo; i < hi; ++i) {
                const T* x = a.data + i * a.row_stride;
                const T* y = b.data + i * b.row_stride;
                if (i + ahead < n) {
                    prefetch_row(x + ahead * a.row_stride, d);
                    prefetch_row(y + ahead * b.row_stride, d);
                }
                T dot = 0, na = 0, nb = 0;
#pragma omp simd reduction(+ : dot, na, nb)
                for (std::int64_t j = 0; j < d; ++j) {
                    dot += x[j] * y[j];
                    na += x[j] * x[j];
                    nb += y[j] * y[j];
                }
                out[i * out_stride] = finish_pair(dot, na, nb, x, 1, y, 1, d);
            }
        });
        return;
    }
    // Any other strides (e.g. Fortran order): walk 256 rows at a time column by column, so that the inner loop
    // runs along the rows (unit stride for Fortran order) and still reads each element once.
    parallel_for(n, std::max<std::int64_t>(grain, 256), [&](std::int64_t lo, std::int64_t hi) {
        constexpr std::int64_t kRows = 256;
        T dot[kRows], na[kRows], nb[kRows];
        for (std::int64_t r0 = lo; r0 < hi; r0 += kRows) {
            const std::int64_t cnt = std::min(kRows, hi - r0);
            std::fill(dot, dot + cnt, T(0));
            std::fill(na, na + cnt, T(0));
            std::fill(nb, nb + cnt, T(0));
            for (std::int64_t j = 0; j < d; ++j) {
                const T* x = a.data + r0 * a.row_stride + j * a.col_stride;
                const T* y = b.data + r0 * b.row_stride + j * b.col_stride;
                for (std::int64_t i = 0; i < cnt; ++i) {
                    const T xv = x[i * a.row_stride], yv = y[i * b.row_stride];
                    dot[i] += xv * yv;
                    na[i] += xv * xv;
                    nb[i] += yv * yv;
                }
            }
            for (std::int64_t i = 0; i < cnt; ++i) {
                const std::int64_t r = r0 + i;
                out[r * out_stride] = finish_pair(dot[i], na[i], nb[i], a.data + r * a.row_stride, a.col_stride,
                                                  b.data + r * b.row_stride, b.col_stride, d);
            }
        }
    });
}

namespace {

/// Top-k by tiles: each B tile's scores (of a tile of A rows) written to a scratch matrix by `scorer`, then
/// selected with a k-heap per query kept inside the output arrays. For the scorers that write scores, and for
/// the packed GEMM where its selection state does not fit the budget.
template <typename T>
void topk_tiled(const MatrixView<T>& a, const MatrixView<T>& b, std::int64_t k, T* values, std::int64_t* indices,
                std::size_t budget, Kernel scorer) {
    const std::int64_t n = a.rows, m = b.rows, d = a.cols;
    const bool packed = scorer == Kernel::Packed;
    // Our own scorers leave the cores free for a threaded selection; after a CBLAS GEMM the selection stays on
    // this thread, because OpenBLAS workers spin between calls and sharing the cores with them collapses
    // throughput on a busy machine.
    const bool threaded_selection = scorer != Kernel::Scale;

    Operand<T> probe;
    const bool copy_a = packed || !blas_layout(a, probe), copy_b = !packed && !blas_layout(b, probe);
    const std::size_t sz = sizeof(T), dd = static_cast<std::size_t>(std::max<std::int64_t>(d, 1));
    const std::size_t usable = budget - (packed ? kPackedScratchBytes : 0);  // the packed GEMM's B panels
    // B tile: at most a quarter of the budget (and at most 32 MiB).
    std::int64_t mb = tile_rows<T>(d, m, std::min(kTileBytes, usable / 4));
    if (scorer == Kernel::Fused && rows_contiguous(b)) {
        // B read in place: a tile costs only its scores (n x mb). Tiles of up to 1 MiB of scores (in L2): fewer
        // tiles, so fewer thread starts and joins, and fewer pauses for this thread's selection.
        const std::size_t score_bytes = std::min(kFusedScoreBytes, usable / 4);
        mb = std::clamp<std::int64_t>(static_cast<std::int64_t>(score_bytes / (sz * static_cast<std::size_t>(n))),
                                      mb, std::max<std::int64_t>(m, 1));
    }
    const std::size_t used_b = static_cast<std::size_t>(mb) * (copy_b ? dd * sz : 0) + static_cast<std::size_t>(mb) * sz;
    // A tile: the rest pays for the scratch scores (nb x mb) and, if A is copied (or packed), its rows.
    const std::size_t per_row = static_cast<std::size_t>(mb) * sz + (copy_a ? dd * sz : 0) + sz;
    const std::size_t rest = usable > used_b ? usable - used_b : per_row;
    const std::int64_t nb = std::clamp<std::int64_t>(static_cast<std::int64_t>(rest / per_row), 1, n);
    // The scores' scratch belongs to this thread between calls (a fresh MiB costs a page fault per 4 KiB).
    thread_local Scratch<T> scores;
    struct Trim {  // also on an exception
        Scratch<T>& s;
        ~Trim() { s.trim(); }
    } trim{scores};
    T* const score_buf = scores.get(static_cast<std::size_t>(nb * mb));  // helpers see this thread's buffer
    const StrategyFn<T> score = kernel_fn<T>(scorer);
    std::int64_t filled = 0;  // every row has seen the same candidates, so one fill count serves them all
    for (std::int64_t j0 = 0; j0 < m; j0 += mb) {
        const std::int64_t j1 = std::min(m, j0 + mb), cols = j1 - j0;
        const MatrixView<T> b_tile{b.data + j0 * b.row_stride, cols, d, b.row_stride, b.col_stride};
        for (std::int64_t i0 = 0; i0 < n; i0 += nb) {
            const std::int64_t i1 = std::min(n, i0 + nb), rows = i1 - i0;
            const MatrixView<T> a_tile{a.data + i0 * a.row_stride, rows, d, a.row_stride, a.col_stride};
            run_rescuing(score, a_tile, b_tile, score_buf, cols);
            parallel_for(rows, threaded_selection ? 1 : rows + 1, [&](std::int64_t lo, std::int64_t hi) {
                for (std::int64_t r = lo; r < hi; ++r) {
                    T* hv = values + (i0 + r) * k;
                    std::int64_t* hi_ = indices + (i0 + r) * k;
                    const T* srow = score_buf + r * cols;
                    std::int64_t size = filled, j = 0;
                    for (; j < cols && size < k; ++j) {  // filling the heap: every score enters
                        hv[size] = srow[j];
                        hi_[size] = j0 + j;
                        sift_up(hv, hi_, size);
                        ++size;
                    }
                    for (; j < cols; j += kSelectBlock) {
                        const std::int64_t e = std::min(cols, j + kSelectBlock);
                        const T bar = hv[0];  // the worst kept: a score below it cannot enter
                        if (!std::isnan(bar)) {  // one vectorised test per block: most blocks hold no candidate
                            int hits = 0;
#pragma omp simd reduction(| : hits)
                            for (std::int64_t q = j; q < e; ++q) hits |= !(srow[q] < bar);
                            if (hits == 0) continue;
                        }
                        for (std::int64_t q = j; q < e; ++q) {
                            if (better(srow[q], j0 + q, hv[0], hi_[0])) {
                                hv[0] = srow[q];
                                hi_[0] = j0 + q;
                                sift_down(hv, hi_, k, 0);
                            }
                        }
                    }
                }
            });
        }
        filled = std::min<std::int64_t>(k, filled + cols);
    }
    // Sort every row best first: pop the heap (root = worst) from the back.
    parallel_for(n, std::max<std::int64_t>(1, 4096 / k), [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t r = lo; r < hi; ++r) {
            T* hv = values + r * k;
            std::int64_t* hi_ = indices + r * k;
            for (std::int64_t size = k; size > 1; --size) {
                std::swap(hv[0], hv[size - 1]);
                std::swap(hi_[0], hi_[size - 1]);
                sift_down(hv, hi_, size - 1, 0);
            }
        }
    });
}

/// Top-k on the packed GEMM with the selection in its micro-kernel (packed_topk): no score matrix, one pass
/// over B per tile of A rows, the tile as large as the budget allows. False (nothing done) when even a small
/// tile of A rows does not fit: the caller then runs topk_tiled.
bool topk_packed_fused(const MatrixView<float>& a, const MatrixView<float>& b, std::int64_t k, float* values,
                       std::int64_t* indices, std::size_t budget) {
    const std::int64_t n = a.rows, m = b.rows, d = a.cols;
    const std::int64_t workers = detail::max_threads();
    const std::size_t slots = static_cast<std::size_t>(workers);
    // Everything the call allocates for a tile of `rows` rows of A: the GEMM's own scratch, one TopkRows per
    // worker, the merge's per-thread buffer.
    auto bytes = [&](std::int64_t rows) {
        return detail::packed_topk_bytes(rows, d, workers) + slots * detail::TopkRows::bytes(rows, k) +
               slots * detail::merge_topk_bytes(slots, k);
    };
    // The largest tile that fits (bytes grows with rows). Below 32 rows (or all of A) the packed GEMM would
    // re-read B for too little work per pass: the tiled path instead.
    std::int64_t lo = 0, hi = n;
    while (lo < hi) {
        const std::int64_t mid = lo + (hi - lo + 1) / 2;
        if (bytes(mid) <= budget) lo = mid; else hi = mid - 1;
    }
    const std::int64_t nb = lo;
    if (nb < std::min<std::int64_t>(n, 32)) return false;
    std::vector<detail::TopkRows> parts(slots);
    for (std::int64_t i0 = 0; i0 < n; i0 += nb) {
        const std::int64_t rows = std::min(nb, n - i0);
        const MatrixView<float> a_tile{a.data + i0 * a.row_stride, rows, d, a.row_stride, a.col_stride};
        for (auto& p : parts) p.reset(rows, k);
        RangeFlag flag{false};
        detail::packed_topk(a_tile.data, a_tile.row_stride, rows, b.data, b.row_stride, m, d, parts.data(), workers,
                            flag);
        if (flag.load(std::memory_order_relaxed)) {  // a row outside the safe range (rare): redo these rows by
            topk_tiled(a_tile, b, k, values + i0 * k, indices + i0 * k, budget, Kernel::Packed);  // tiles
            continue;
        }
        detail::merge_topk(parts.data(), slots, rows, k, values + i0 * k, indices + i0 * k);
    }
    return true;
}

}  // namespace

template <typename T>
void topk_cosine(const MatrixView<T>& a, const MatrixView<T>& b, std::int64_t k, T* values, std::int64_t* indices,
                 std::size_t memory_budget) {
    check_topk_args(a, b, k, memory_budget);
    const std::int64_t n = a.rows, m = b.rows;
    if (n == 0 || m == 0) return;
    check_output("topk_cosine", values, n, k, k, 1, n, k);
    check_output("topk_cosine", indices, n, k, k, 1, n, k);
    const Kernel scorer = decide(Strategy::Auto, call_of(a, b, memory_budget));
    if constexpr (std::is_same_v<T, float>) {
        if (scorer == Kernel::Packed && topk_packed_fused(a, b, k, values, indices, memory_budget)) return;
    }
    topk_tiled(a, b, k, values, indices, memory_budget, scorer);
}

template <typename T>
void gemm_nt(const MatrixView<T>& a, const MatrixView<T>& b, T* c, std::int64_t ldc) {
    check_matrix_args("gemm_nt", a, b);
    check_output("gemm_nt", c, a.rows, b.rows, ldc, 1, a.rows, b.rows);
    if (a.rows == 0 || b.rows == 0) return;
    if (a.rows == 1) ldc = b.rows;  // never used for a single row, but BLAS wants it >= M
    Scratch<T> ba, bb;
    gemm_abt(rows_operand(a, 0, a.rows, ba), rows_operand(b, 0, b.rows, bb), a.rows, b.rows, a.cols, c, ldc);
}

template <typename T>
bool blas_compatible(const MatrixView<T>& v) {
    Operand<T> op;
    return blas_layout(v, op);
}

std::string blas_info() {
#if defined(METRIC_BINDINGS_SCIPY_OPENBLAS)
    std::ostringstream s;
    s << "scipy-openblas32 (" << scipy_openblas_get_config() << "; core " << scipy_openblas_get_corename()
      << "; threads " << scipy_openblas_get_num_threads() << ")";
    return s.str();
#else
    return std::string("system BLAS: ") + METRIC_BINDINGS_BLAS_DESCRIPTION;
#endif
}

#define MB_INSTANTIATE(T)                                                                                     \
    template void cosine_similarity<T>(const MatrixView<T>&, const MatrixView<T>&, T*, std::int64_t, Strategy); \
    template void paired_cosine_similarity<T>(const MatrixView<T>&, const MatrixView<T>&, T*, std::int64_t);     \
    template void topk_cosine<T>(const MatrixView<T>&, const MatrixView<T>&, std::int64_t, T*, std::int64_t*,    \
                                 std::size_t);                                                                 \
    template void gemm_nt<T>(const MatrixView<T>&, const MatrixView<T>&, T*, std::int64_t);                      \
    template bool blas_compatible<T>(const MatrixView<T>&);

MB_INSTANTIATE(float)
MB_INSTANTIATE(double)

std::int64_t num_threads() { return detail::max_threads(); }

}  // namespace metric_bindings
