// Every check of the arguments (shapes, k, output buffers) in one place: the compute functions call these, and
// so does the Python binding before it allocates results. Messages name the function, the shapes and the fix.
#include <limits>
#include <sstream>
#include <string>

#include "cosine.hpp"

namespace metric_bindings {
namespace {

constexpr std::int64_t kBlasMax = std::numeric_limits<int>::max();  // 32-bit BLAS integers

std::string shape(std::int64_t r, std::int64_t c) {
    std::ostringstream s;
    s << "(" << r << ", " << c << ")";
    return s.str();
}

template <typename T>
void check_view(const char* fn, const char* name, const MatrixView<T>& v) {
    const std::string where = std::string(fn) + ": " + name + " has shape " + shape(v.rows, v.cols);
    if (v.rows < 0 || v.cols < 0) throw ArgumentError(where + ": dimensions must be >= 0");
    if (v.rows > 0 && v.cols > 0 && v.data == nullptr)
        throw ArgumentError(std::string(fn) + ": " + name + " is a null pointer with a non-empty shape");
    if (v.rows > kBlasMax || v.cols > kBlasMax)
        throw ArgumentError(where + ": a dimension exceeds 2^31-1, the limit of a 32-bit BLAS");
}

template <typename T>
void check_pair(const char* fn, const MatrixView<T>& a, const MatrixView<T>& b) {
    check_view(fn, "A", a);
    check_view(fn, "B", b);
    if (a.cols != b.cols) {
        std::ostringstream s;
        s << fn << ": A has shape " << shape(a.rows, a.cols) << " and B has shape " << shape(b.rows, b.cols)
          << ": the number of columns D must match (" << a.cols << " != " << b.cols << ")";
        throw ArgumentError(s.str());
    }
}

}  // namespace

template <typename T>
void check_matrix_args(const char* fn, const MatrixView<T>& a, const MatrixView<T>& b) {
    check_pair(fn, a, b);
}

template <typename T>
void check_paired_args(const MatrixView<T>& a, const MatrixView<T>& b) {
    static constexpr const char* fn = "paired_cosine_similarity";
    check_pair(fn, a, b);
    if (a.rows != b.rows) {
        std::ostringstream s;
        s << fn << ": A has shape " << shape(a.rows, a.cols) << " and B has shape " << shape(b.rows, b.cols)
          << ": row-wise pairs need the same number of rows N (" << a.rows << " != " << b.rows << ")";
        throw ArgumentError(s.str());
    }
}

template <typename T>
void check_topk_args(const MatrixView<T>& a, const MatrixView<T>& b, std::int64_t k, std::size_t memory_budget) {
    static constexpr const char* fn = "topk_cosine";
    check_pair(fn, a, b);
    if (memory_budget < kMinTopkBudget) {
        throw ArgumentError(std::string(fn) + ": memory_budget=" + std::to_string(memory_budget) +
                            " bytes is below the minimum of " + std::to_string(kMinTopkBudget) + " bytes (64 KiB)");
    }
    const std::int64_t m = b.rows;
    if (a.rows == 0 || m == 0) {  // empty results: any k >= 0 will do
        if (k < 0) throw ArgumentError(std::string(fn) + ": k=" + std::to_string(k) + " is out of range: k must be >= 1");
        return;
    }
    if (k < 1 || k > m) {
        std::ostringstream s;
        s << fn << ": k=" << k << " is out of range: B has shape " << shape(m, b.cols) << ", so k must be in [1, " << m
          << "]";
        throw ArgumentError(s.str());
    }
}

void check_output(const char* fn, const void* data, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                  std::int64_t col_stride, std::int64_t want_rows, std::int64_t want_cols) {
    if (rows != want_rows || cols != want_cols)
        throw ArgumentError(std::string(fn) + ": out has shape " + shape(rows, cols) + " but the result has shape " +
                            shape(want_rows, want_cols));
    if (rows == 0 || cols == 0) return;
    if (data == nullptr) throw ArgumentError(std::string(fn) + ": out is a null pointer");
    if (cols > 1 && col_stride != 1)
        throw ArgumentError(std::string(fn) + ": out must have unit stride along its last axis (C order rows)");
    if (rows > 1 && (row_stride < cols || row_stride > kBlasMax))
        throw ArgumentError(std::string(fn) + ": out rows overlap (row stride " + std::to_string(row_stride) + " < " +
                            std::to_string(cols) + ")");
}

void check_output(const char* fn, const void* data, std::int64_t len, std::int64_t stride, std::int64_t want_len) {
    if (len != want_len)
        throw ArgumentError(std::string(fn) + ": out has shape (" + std::to_string(len) + ",) but the result has shape (" +
                            std::to_string(want_len) + ",)");
    if (len == 0) return;
    if (data == nullptr) throw ArgumentError(std::string(fn) + ": out is a null pointer");
    if (len > 1 && stride == 0) throw ArgumentError(std::string(fn) + ": out has stride 0");
}

#define MB_INSTANTIATE_CHECKS(T)                                                                  \
    template void check_matrix_args<T>(const char*, const MatrixView<T>&, const MatrixView<T>&); \
    template void check_paired_args<T>(const MatrixView<T>&, const MatrixView<T>&);              \
    template void check_topk_args<T>(const MatrixView<T>&, const MatrixView<T>&, std::int64_t, std::size_t);

MB_INSTANTIATE_CHECKS(float)
MB_INSTANTIATE_CHECKS(double)

}  // namespace metric_bindings
