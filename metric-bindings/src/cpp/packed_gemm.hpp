// Float32 cosine similarity on our own packed GEMM, on CPUs with AVX-512 (see packed_gemm.cpp for why).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace metric_bindings::detail {

/// True when the packed kernel can run: compiled in (always with GCC on x86-64, whatever -march says; with other
/// compilers only for an AVX-512 target) and this CPU has AVX-512 (F, DQ, BW, VL). Otherwise packed_cosine must
/// not be called and the CBLAS strategies do all the work.
bool packed_gemm_available();

/// out(i, j) = cos(a_i, b_j) for a (n x d) and b (m x d), both with contiguous rows (leading dimensions lda and
/// ldb >= d), into a row-major out (ldo >= m). Needs n, m, d >= 1. Extra memory: a packed copy of a (n x d) and
/// a few MiB per thread, reused across calls. A row whose norm is outside the safe range (kernel_common.hpp)
/// raises out_of_range, and the output is then not valid.
void packed_cosine(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                   std::int64_t m, std::int64_t d, float* out, std::int64_t ldo, std::atomic<bool>& out_of_range);

class TopkRows;  // topk_select.hpp

/// Top-k on the packed GEMM: the cosines of a (n x d) against b (m x d), as packed_cosine computes them, are
/// never stored: each micro-kernel tile is compared in registers with its rows' bars and only survivors are
/// offered to sel[w], where w is the worker slot (0 <= w < nsel) that computed it; each of the nsel TopkRows
/// must have been reset for n rows. Every column of b reaches exactly one of them. At most nsel threads run.
/// A row outside the safe range raises out_of_range, and the candidates are then not valid.
void packed_topk(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                 std::int64_t m, std::int64_t d, TopkRows* sel, std::int64_t nsel, std::atomic<bool>& out_of_range);
/// The extra memory packed_topk takes for n rows of a (its packed copy, each slot's B panels and, when d is
/// more than one depth block, each slot's partial sums), the TopkRows excluded.
std::size_t packed_topk_bytes(std::int64_t n, std::int64_t d, std::int64_t nsel);

/// The same for a b of at most kFewColumnsMax rows (many rows against a few, e.g. 100k items x 16 classes): B
/// packed once (a few KiB), A's rows read once straight from memory in register-blocked tiles. Needs n, d >= 1,
/// 1 <= m <= kFewColumnsMax.
inline constexpr std::int64_t kFewColumnsMax = 64;
void few_columns_cosine(const float* a, std::int64_t lda, std::int64_t n, const float* b, std::int64_t ldb,
                        std::int64_t m, std::int64_t d, float* out, std::int64_t ldo, std::atomic<bool>& out_of_range);

}  // namespace metric_bindings::detail
