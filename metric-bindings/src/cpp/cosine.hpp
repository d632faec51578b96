// metric_bindings: cosine similarity on CBLAS. Pure C++17, no Python: usable from any C++ program.
//
// Semantics (identical for float and double):
//  * cos(a, b) = <a, b> / (|a| |b|). A row whose norm is 0 gives similarity 0 (scikit-learn's convention),
//    never a division by zero.
//  * NaN propagates: a row holding a NaN gives NaN similarities. A row whose norm overflows (inf) gives NaN.
//  * Results lie in [-1, 1] up to a few units of rounding; they are not clamped.
//  * Inputs are read through MatrixView (any element strides, even negative or 0). A view that BLAS can use
//    directly (row-major or column-major with a leading dimension) is never copied; anything else is copied
//    once into a contiguous buffer.
//  * Invalid arguments throw ArgumentError (a std::invalid_argument) with a message that names the shapes; the
//    checks (checks.cpp) are public, so that a binding can run them before it allocates results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace metric_bindings {

/// Read-only 2-D view: element (i, j) is data[i * row_stride + j * col_stride] (strides in elements).
template <typename T>
struct MatrixView {
    const T* data = nullptr;
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    std::int64_t row_stride = 0;
    std::int64_t col_stride = 1;

    /// A C-contiguous (row-major, packed) matrix.
    static MatrixView row_major(const T* d, std::int64_t r, std::int64_t c) { return {d, r, c, c, 1}; }
    /// A Fortran-ordered (column-major, packed) matrix.
    static MatrixView col_major(const T* d, std::int64_t r, std::int64_t c) { return {d, r, c, 1, r}; }
};

/// An invalid argument (shape, k, output buffer). The message names the function, the shapes and the fix.
class ArgumentError : public std::invalid_argument {
   public:
    using std::invalid_argument::invalid_argument;
};

/// The checks every function below runs first (checks.cpp). fn names the function in the message.
template <typename T>
void check_matrix_args(const char* fn, const MatrixView<T>& a, const MatrixView<T>& b);  ///< views, D matches
template <typename T>
void check_paired_args(const MatrixView<T>& a, const MatrixView<T>& b);  ///< and the same number of rows
template <typename T>
void check_topk_args(const MatrixView<T>& a, const MatrixView<T>& b, std::int64_t k,
                     std::size_t memory_budget);  ///< and 1 <= k <= M, memory_budget >= kMinTopkBudget
/// An output matrix: shape (want_rows, want_cols), unit stride along its rows, rows that do not overlap.
void check_output(const char* fn, const void* data, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                  std::int64_t col_stride, std::int64_t want_rows, std::int64_t want_cols);
/// An output vector: length want_len, a non-zero stride.
void check_output(const char* fn, const void* data, std::int64_t len, std::int64_t stride, std::int64_t want_len);

/// How cosine_similarity applies the norms (both give the same numbers up to rounding).
enum class Strategy {
    Auto,           ///< float32 on AVX-512: PackedGemm for B of 8-64 rows against more rows of A; then Fused
                    ///< if a side has <= 8 rows or B <= 32; else PackedGemm for large float32 work; else
                    ///< NormalizeFirst if the copies are small next to the output; else ScaleOutput
    NormalizeFirst, ///< copy A and B with unit rows, then one GEMM (no pass over the output)
    ScaleOutput,    ///< norms, then GEMM on the raw inputs (tiled), then one pass scaling the output (no copy of B)
    Fused,          ///< no BLAS: one pass over the larger side, for shapes where the other side has few rows
    PackedGemm,     ///< no BLAS: our own blocked GEMM with the norms folded into its packing and the scaling
                    ///< into its stores, or its few-columns kernel when B has <= 64 rows and A more (float32
                    ///< on AVX-512 CPUs; otherwise, and for double, ScaleOutput)
};

/// Default bound on the extra memory topk_cosine allocates besides its outputs (64 MiB).
inline constexpr std::size_t kDefaultTopkBudget = std::size_t{64} << 20;
/// The smallest budget topk_cosine accepts (64 KiB): its per-thread selection state and smallest tiles.
inline constexpr std::size_t kMinTopkBudget = std::size_t{64} << 10;

/// out (N x M, row-major, leading dimension ldo >= M) = cosine similarities of the rows of a (N x D) and b (M x D).
template <typename T>
void cosine_similarity(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t ldo,
                       Strategy strategy = Strategy::Auto);

/// out[i * out_stride] = cos(a_i, b_i) for a and b both N x D: one fused, vectorised pass over both inputs.
template <typename T>
void paired_cosine_similarity(const MatrixView<T>& a, const MatrixView<T>& b, T* out, std::int64_t out_stride = 1);

/// For each row of a, the k most similar rows of b: values and indices (both N x k, row-major, packed), sorted
/// by decreasing similarity (NaN first, ties by increasing index). B is processed in blocks so that the extra
/// memory stays below memory_budget whatever M is. Requires 1 <= k <= M unless N or M is 0, and
/// memory_budget >= kMinTopkBudget.
template <typename T>
void topk_cosine(const MatrixView<T>& a, const MatrixView<T>& b, std::int64_t k, T* values, std::int64_t* indices,
                 std::size_t memory_budget = kDefaultTopkBudget);

/// Threads our own passes use now (norms, scaling, row-wise, top-k selection; BLAS has its own setting):
/// METRIC_BINDINGS_NUM_THREADS when set to a number > 0, else the hardware threads. Read on every call.
std::int64_t num_threads();

/// Plain C = A B^T (N x M, ldc) through the same BLAS: the yardstick the benchmarks compare against.
template <typename T>
void gemm_nt(const MatrixView<T>& a, const MatrixView<T>& b, T* c, std::int64_t ldc);

/// True when BLAS can read v in place (row- or column-major with a leading dimension): no copy is made.
template <typename T>
bool blas_compatible(const MatrixView<T>& v);

/// Which BLAS this build calls (name, configuration, core type, threads), for logs and benchmarks.
std::string blas_info();

/// The strategy Auto picks for these sizes and precision, for inputs with contiguous rows (exposed so that tests
/// and benchmarks can report it).
Strategy choose_strategy(std::int64_t n, std::int64_t m, std::int64_t d, bool single_precision = true);

}  // namespace metric_bindings
