// Unit tests of the C++ core alone (no Python): compared with a naive double-precision reference.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <tuple>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "cosine.hpp"
#include "packed_gemm.hpp"

namespace mb = metric_bindings;

namespace {

/// Tests of the packed GEMM itself are skipped, with the reason, where it cannot run (the fallback would pass
/// them without the packed GEMM having run).
#define SKIP_WITHOUT_PACKED_GEMM()                                                                           \
    if (!mb::detail::packed_gemm_available())                                                               \
    GTEST_SKIP() << "packed GEMM not available (no AVX-512 in this CPU or build, or "                       \
                    "METRIC_BINDINGS_DISABLE_PACKED set)"

template <typename T>
std::vector<T> random_matrix(std::int64_t r, std::int64_t c, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> dist(0.0, 1.0);
    std::vector<T> v(static_cast<std::size_t>(r * c));
    for (auto& x : v) x = static_cast<T>(dist(gen));
    return v;
}

/// The largest magnitude of row i of v brought into [1, 2) by a power of two (exact): the reference never
/// overflows or underflows, whatever the row's scale.
template <typename T>
std::vector<double> rescaled_row(const mb::MatrixView<T>& v, std::int64_t i) {
    std::vector<double> r(static_cast<std::size_t>(v.cols));
    double m = 0;
    for (std::int64_t k = 0; k < v.cols; ++k) {
        r[k] = v.data[i * v.row_stride + k * v.col_stride];
        m = std::max(m, std::fabs(r[k]));
    }
    if (m > 0 && std::isfinite(m))
        for (auto& x : r) x = std::ldexp(x, -std::ilogb(m));
    return r;
}

/// cos(x, y) in double for two rescaled rows; 0 for a zero row.
inline double ref_cos_rows(const std::vector<double>& x, const std::vector<double>& y) {
    double dot = 0, na = 0, nb = 0;
    for (std::size_t k = 0; k < x.size(); ++k) {
        dot += x[k] * y[k];
        na += x[k] * x[k];
        nb += y[k] * y[k];
    }
    if (na == 0 || nb == 0) return 0.0;
    return dot / (std::sqrt(na) * std::sqrt(nb));
}

/// cos(a_i, b_j) in double on rescaled rows.
template <typename T>
double ref_cos(const mb::MatrixView<T>& a, std::int64_t i, const mb::MatrixView<T>& b, std::int64_t j) {
    return ref_cos_rows(rescaled_row(a, i), rescaled_row(b, j));
}

/// The whole reference matrix (n x m, row-major), each row rescaled once.
template <typename T>
std::vector<T> ref_matrix(const mb::MatrixView<T>& a, const mb::MatrixView<T>& b) {
    auto unit_rows = [](const mb::MatrixView<T>& v) {  // rescaled, then divided by their norm (0 stays 0)
        std::vector<std::vector<double>> rows;
        for (std::int64_t i = 0; i < v.rows; ++i) {
            auto r = rescaled_row(v, i);
            double s = 0;
            for (double x : r) s += x * x;
            for (double& x : r) x = s > 0 ? x / std::sqrt(s) : 0.0;
            rows.push_back(std::move(r));
        }
        return rows;
    };
    const auto x = unit_rows(a), y = unit_rows(b);
    std::vector<T> full(static_cast<std::size_t>(a.rows * b.rows));
    for (std::int64_t i = 0; i < a.rows; ++i)
        for (std::int64_t j = 0; j < b.rows; ++j) {
            double dot = 0;
            for (std::int64_t k = 0; k < a.cols; ++k) dot += x[i][k] * y[j][k];
            full[i * b.rows + j] = static_cast<T>(dot);
        }
    return full;
}

/// The same (r x c) matrix stored column-major.
template <typename T>
std::vector<T> column_major_copy(const std::vector<T>& v, std::int64_t r, std::int64_t c) {
    std::vector<T> t(v.size());
    for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t k = 0; k < c; ++k) t[k * r + i] = v[i * c + k];
    return t;
}

/// Uniform values in [-1, 1], row i scaled by 2^e_i with e_i drawn across T's whole exponent range (from rows
/// whose values are mostly subnormal up to rows next to T's max), rows of every scale mixed in one matrix.
template <typename T>
std::vector<T> any_scale_matrix(std::int64_t r, std::int64_t c, unsigned seed) {
    using L = std::numeric_limits<T>;
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> val(-1.0, 1.0);
    std::uniform_int_distribution<int> ex(L::min_exponent - L::digits, L::max_exponent - 1);
    std::vector<T> v(static_cast<std::size_t>(r * c));
    for (std::int64_t i = 0; i < r; ++i) {
        const int e = i % 4 == 0 ? L::max_exponent - 1 : i % 4 == 1 ? L::min_exponent - L::digits + 8 : ex(gen);
        for (std::int64_t k = 0; k < c; ++k) v[i * c + k] = static_cast<T>(std::ldexp(val(gen), e));
    }
    return v;
}

template <typename T>
constexpr double tol() {
    return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

template <typename T>
void expect_matrix(const mb::MatrixView<T>& a, const mb::MatrixView<T>& b, mb::Strategy s) {
    std::vector<T> out(static_cast<std::size_t>(a.rows * b.rows));
    mb::cosine_similarity(a, b, out.data(), b.rows, s);
    for (std::int64_t i = 0; i < a.rows; ++i)
        for (std::int64_t j = 0; j < b.rows; ++j)
            ASSERT_NEAR(out[i * b.rows + j], ref_cos(a, i, b, j), tol<T>()) << "i=" << i << " j=" << j;
}

/// Checks top-k results against the full matrix (n x m) sorted: NaN first, then best first, ties by smaller index.
template <typename T>
void expect_topk(const std::vector<T>& full, std::int64_t n, std::int64_t m, std::int64_t k,
                 const std::vector<T>& vals, const std::vector<std::int64_t>& idx) {
    for (std::int64_t i = 0; i < n; ++i) {
        std::vector<std::int64_t> order(static_cast<std::size_t>(m));
        for (std::int64_t j = 0; j < m; ++j) order[j] = j;
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](auto x, auto y) {
            const T u = full[i * m + x], v = full[i * m + y];
            if (std::isnan(u) != std::isnan(v)) return std::isnan(u);
            return u > v || (!(u < v) && x < y);
        });
        for (std::int64_t r = 0; r < k; ++r) {
            EXPECT_EQ(idx[i * k + r], order[r]) << "row " << i << " rank " << r;
            const T want = full[i * m + order[r]];
            if (std::isnan(want)) {
                EXPECT_TRUE(std::isnan(vals[i * k + r])) << "row " << i << " rank " << r;
            } else {
                EXPECT_NEAR(vals[i * k + r], want, tol<T>());
            }
        }
    }
}

template <typename T>
class Typed : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Typed, Types);

}  // namespace

TYPED_TEST(Typed, MatrixMatchesReferenceForEveryStrategy) {
    using T = TypeParam;
    for (auto [n, m, d] : {std::tuple{1, 1, 1}, {3, 5, 7}, {17, 1, 33}, {64, 129, 65}}) {
        auto av = random_matrix<T>(n, d, 1), bv = random_matrix<T>(m, d, 2);
        auto a = mb::MatrixView<T>::row_major(av.data(), n, d), b = mb::MatrixView<T>::row_major(bv.data(), m, d);
        for (auto s : {mb::Strategy::Auto, mb::Strategy::NormalizeFirst, mb::Strategy::ScaleOutput, mb::Strategy::Fused,
                       mb::Strategy::PackedGemm})
            expect_matrix(a, b, s);
    }
}

TYPED_TEST(Typed, ColumnMajorAndStridedViews) {
    using T = TypeParam;
    const std::int64_t n = 9, m = 11, d = 6;
    auto av = random_matrix<T>(n, d, 3), bv = random_matrix<T>(m, 2 * d, 4);
    auto a = mb::MatrixView<T>::col_major(av.data(), n, d);              // a transposed C array: no copy
    mb::MatrixView<T> b{bv.data(), m, d, 2 * d, 2};                        // every other column: copied
    EXPECT_TRUE(mb::blas_compatible(a));
    EXPECT_FALSE(mb::blas_compatible(b));
    mb::MatrixView<T> padded{bv.data(), m, d, 2 * d, 1};                   // row-major with a leading dimension
    EXPECT_TRUE(mb::blas_compatible(padded));
    mb::MatrixView<T> reversed{av.data() + (n - 1), n, d, -1, n};          // negative stride: copied
    EXPECT_FALSE(mb::blas_compatible(reversed));
    for (auto s : {mb::Strategy::NormalizeFirst, mb::Strategy::ScaleOutput, mb::Strategy::Fused,
                   mb::Strategy::PackedGemm}) {
        expect_matrix(a, b, s);
        expect_matrix(padded, a, s);
        expect_matrix(reversed, padded, s);
    }
}

TYPED_TEST(Typed, ZeroRowsGiveZeroAndNanPropagates) {
    using T = TypeParam;
    std::vector<T> av = {0, 0, 0, 1, 2, 3}, bv = {1, 1, 1, std::numeric_limits<T>::quiet_NaN(), 0, 0};
    auto a = mb::MatrixView<T>::row_major(av.data(), 2, 3), b = mb::MatrixView<T>::row_major(bv.data(), 2, 3);
    for (auto s : {mb::Strategy::NormalizeFirst, mb::Strategy::ScaleOutput, mb::Strategy::Fused,
                   mb::Strategy::PackedGemm}) {
        std::vector<T> out(4, T(-7));
        mb::cosine_similarity(a, b, out.data(), 2, s);
        EXPECT_EQ(out[0], T(0));
        EXPECT_TRUE(std::isnan(out[1]));
        EXPECT_NEAR(out[2], 6.0 / std::sqrt(14.0 * 3.0), tol<T>());
        EXPECT_TRUE(std::isnan(out[3]));
    }
    std::vector<T> p(2);
    mb::paired_cosine_similarity(a, b, p.data());
    EXPECT_EQ(p[0], T(0));
    EXPECT_TRUE(std::isnan(p[1]));
}

TYPED_TEST(Typed, PairedMatchesReferenceRowAndColumnMajor) {
    using T = TypeParam;
    const std::int64_t n = 300, d = 37;
    auto av = random_matrix<T>(n, d, 5), bv = random_matrix<T>(n, d, 6);
    for (bool fortran : {false, true}) {
        auto a = fortran ? mb::MatrixView<T>::col_major(av.data(), n, d) : mb::MatrixView<T>::row_major(av.data(), n, d);
        auto b = mb::MatrixView<T>::row_major(bv.data(), n, d);
        std::vector<T> out(static_cast<std::size_t>(2 * n));
        mb::paired_cosine_similarity(a, b, out.data(), 2);  // strided output
        for (std::int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[2 * i], ref_cos(a, i, b, i), tol<T>());
    }
}

TYPED_TEST(Typed, TopkMatchesSortedFullMatrixAndHonoursTinyBudget) {
    using T = TypeParam;
    const std::int64_t n = 7, m = 1000, d = 16, k = 5;
    auto av = random_matrix<T>(n, d, 7), bv = random_matrix<T>(m, d, 8);
    auto a = mb::MatrixView<T>::row_major(av.data(), n, d), b = mb::MatrixView<T>::row_major(bv.data(), m, d);
    std::vector<T> full(static_cast<std::size_t>(n * m));
    mb::cosine_similarity(a, b, full.data(), m);
    for (std::size_t budget : {mb::kDefaultTopkBudget, mb::kMinTopkBudget}) {  // the minimum: smallest blocks
        std::vector<T> vals(static_cast<std::size_t>(n * k));
        std::vector<std::int64_t> idx(static_cast<std::size_t>(n * k));
        mb::topk_cosine(a, b, k, vals.data(), idx.data(), budget);
        expect_topk(full, n, m, k, vals, idx);
    }
}

TEST(Core, TopkRanksNanFirstAndBreaksTiesByIndex) {
    std::vector<float> av = {1, 0}, bv = {1, 0, 1, 0, std::nanf(""), 0, 0, 1};
    auto a = mb::MatrixView<float>::row_major(av.data(), 1, 2), b = mb::MatrixView<float>::row_major(bv.data(), 4, 2);
    std::vector<float> vals(4);
    std::vector<std::int64_t> idx(4);
    mb::topk_cosine(a, b, 4, vals.data(), idx.data());
    EXPECT_TRUE(std::isnan(vals[0]));
    EXPECT_EQ(idx[0], 2);
    EXPECT_EQ(idx[1], 0);
    EXPECT_EQ(idx[2], 1);
    EXPECT_EQ(idx[3], 3);
    EXPECT_FLOAT_EQ(vals[3], 0.0f);
}

TEST(Core, BadArgumentsThrowWithShapes) {
    std::vector<float> x(12);
    auto a = mb::MatrixView<float>::row_major(x.data(), 3, 4), b = mb::MatrixView<float>::row_major(x.data(), 2, 6);
    std::vector<float> out(100);
    std::vector<std::int64_t> idx(100);
    try {
        mb::cosine_similarity(a, b, out.data(), 2);
        FAIL() << "no exception";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("(3, 4)"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("(2, 6)"), std::string::npos) << e.what();
    }
    auto b4 = mb::MatrixView<float>::row_major(x.data(), 3, 4);
    EXPECT_THROW(mb::topk_cosine(a, b4, 0, out.data(), idx.data()), std::invalid_argument);
    EXPECT_THROW(mb::topk_cosine(a, b4, 4, out.data(), idx.data()), std::invalid_argument);
    try {  // a budget below the minimum is refused, not silently raised
        mb::topk_cosine(a, b4, 1, out.data(), idx.data(), mb::kMinTopkBudget - 1);
        FAIL() << "no exception";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("minimum of 65536 bytes"), std::string::npos) << e.what();
    }
    EXPECT_THROW(mb::paired_cosine_similarity(a, mb::MatrixView<float>::row_major(x.data(), 2, 4), out.data()),
                 std::invalid_argument);
    EXPECT_THROW(mb::cosine_similarity(a, b4, out.data(), 1), std::invalid_argument);  // ldo < M
}

TEST(Core, EmptyInputsAreNoOps) {
    std::vector<double> x(4, 1.0);
    auto a = mb::MatrixView<double>::row_major(x.data(), 0, 4), b = mb::MatrixView<double>::row_major(x.data(), 1, 4);
    EXPECT_NO_THROW(mb::cosine_similarity(a, b, static_cast<double*>(nullptr), 0));
    EXPECT_NO_THROW(mb::topk_cosine(b, a, 3, static_cast<double*>(nullptr), nullptr));
    std::vector<double> out(1, -1);
    auto z = mb::MatrixView<double>::row_major(x.data(), 1, 0);  // D = 0: every norm is 0, so similarity 0
    mb::cosine_similarity(z, z, out.data(), 1);
    EXPECT_EQ(out[0], 0.0);
}

TEST(Core, BlasInfoNamesTheLibrary) { EXPECT_FALSE(mb::blas_info().empty()); }

TEST(Core, ThreadedPathsAgreeWithReference) {
    // Above the per-thread grain: norms, fused kernel, scaling and row-wise run on several threads.
    const std::int64_t n = 3, m = 120000, d = 24;
    auto av = random_matrix<float>(n, d, 11), bv = random_matrix<float>(m, d, 12);
    auto a = mb::MatrixView<float>::row_major(av.data(), n, d), b = mb::MatrixView<float>::row_major(bv.data(), m, d);
    std::vector<float> out(static_cast<std::size_t>(n * m));
    for (auto s : {mb::Strategy::Fused, mb::Strategy::ScaleOutput, mb::Strategy::PackedGemm}) {
        mb::cosine_similarity(a, b, out.data(), m, s);
        for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t j = 0; j < m; j += 997) ASSERT_NEAR(out[i * m + j], ref_cos(a, i, b, j), 2e-5);
    }
    auto b3 = mb::MatrixView<float>::row_major(bv.data(), m / 2, d), c3 = mb::MatrixView<float>::row_major(bv.data() + (m / 2) * d, m / 2, d);
    std::vector<float> p(static_cast<std::size_t>(m / 2));
    mb::paired_cosine_similarity(b3, c3, p.data());
    for (std::int64_t i = 0; i < m / 2; i += 101) ASSERT_NEAR(p[i], ref_cos(b3, i, c3, i), 2e-5);
}

TEST(Core, PackedGemmEdgesDepthBlocksAndStreamingStores) {
    SKIP_WITHOUT_PACKED_GEMM();
    // Panels are 8 rows of A x 32 rows of B, depth blocks 1024: cover partial panels, several depth blocks, an
    // output with a leading dimension (never written past m), and one large enough for streaming stores.
    struct Case {
        std::int64_t n, m, d, ldo;
    };
    // Many rows against at most 64 (the few-columns kernel): 1 to 4 vectors of B rows, A tiles with a tail.
    for (Case c : {Case{1, 1, 1, 1}, Case{9, 33, 1025, 40}, Case{8, 64, 2100, 64}, Case{23, 47, 5, 47},
                   Case{300, 16400, 20, 16400}, Case{1003, 16, 77, 20}, Case{37, 33, 5, 33}, Case{1001, 47, 130, 50},
                   Case{70, 64, 1, 64}, Case{9, 8, 3, 8}}) {
        auto av = random_matrix<float>(c.n, c.d, 21), bv = random_matrix<float>(c.m, c.d, 22);
        auto a = mb::MatrixView<float>::row_major(av.data(), c.n, c.d);
        auto b = mb::MatrixView<float>::row_major(bv.data(), c.m, c.d);
        // 64-byte aligned, as streaming stores need (a std::vector's buffer is only 16-byte aligned)
        const std::size_t count = static_cast<std::size_t>(c.n * c.ldo);
        std::unique_ptr<float, decltype(&std::free)> out(
            static_cast<float*>(std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64)), &std::free);
        std::fill(out.get(), out.get() + count, -9.0f);
        mb::cosine_similarity(a, b, out.get(), c.ldo, mb::Strategy::PackedGemm);
        const std::int64_t step = c.n * c.m > 100000 ? 37 : 1;
        for (std::int64_t i = 0; i < c.n; ++i) {
            for (std::int64_t j = i % step; j < c.m; j += step)
                ASSERT_NEAR(out.get()[i * c.ldo + j], ref_cos(a, i, b, j), 2e-5) << "n=" << c.n << " i=" << i << " j=" << j;
            for (std::int64_t j = c.m; j < c.ldo; ++j) ASSERT_EQ(out.get()[i * c.ldo + j], -9.0f) << "padding written";
        }
    }
}

TEST(Core, TopkOnThePackedGemmMatchesTheSortedMatrix) {
    SKIP_WITHOUT_PACKED_GEMM();
    // float32, >= 2^29 multiply-adds: top-k takes each B tile's cosines from the packed GEMM (where the CPU has
    // AVX-512) and selects on several threads; compared with the CBLAS full matrix sorted.
    const std::int64_t n = 9, m = 60000, d = 1000, k = 4;
    auto av = random_matrix<float>(n, d, 31), bv = random_matrix<float>(m, d, 32);
    auto a = mb::MatrixView<float>::row_major(av.data(), n, d), b = mb::MatrixView<float>::row_major(bv.data(), m, d);
    std::vector<float> full(static_cast<std::size_t>(n * m));
    mb::cosine_similarity(a, b, full.data(), m, mb::Strategy::ScaleOutput);
    for (std::size_t budget : {mb::kDefaultTopkBudget, std::size_t{16} << 20}) {
        std::vector<float> vals(static_cast<std::size_t>(n * k));
        std::vector<std::int64_t> idx(static_cast<std::size_t>(n * k));
        mb::topk_cosine(a, b, k, vals.data(), idx.data(), budget);
        expect_topk(full, n, m, k, vals, idx);
    }
}

TYPED_TEST(Typed, RowsOfAnyMagnitudeGiveTheRightCosines) {
    // Rows scaled from T's subnormals to T's max, mixed: every strategy, the paired pass and every top-k scorer
    // (fused: <= 8 queries; CBLAS or packed: more) agree with the double reference on rescaled rows. With B's
    // rows all in range too, so that each kernel must catch A's rows itself ((40, 9): the few-columns kernel).
    using T = TypeParam;
    for (auto [n, m, d, b_in_range] : {std::tuple{13, 40, 33, false}, {5, 70, 8, false}, {40, 9, 100, false},
                                       {13, 40, 33, true}, {40, 9, 100, true}}) {
        auto av = any_scale_matrix<T>(n, d, 41 + n);
        auto bv = b_in_range ? random_matrix<T>(m, d, 42 + m) : any_scale_matrix<T>(m, d, 42 + m);
        auto a = mb::MatrixView<T>::row_major(av.data(), n, d), b = mb::MatrixView<T>::row_major(bv.data(), m, d);
        const auto at = column_major_copy(av, n, d), bt = column_major_copy(bv, m, d);
        const auto af = mb::MatrixView<T>::col_major(at.data(), n, d), bf = mb::MatrixView<T>::col_major(bt.data(), m, d);
        for (auto s : {mb::Strategy::Auto, mb::Strategy::NormalizeFirst, mb::Strategy::ScaleOutput, mb::Strategy::Fused,
                       mb::Strategy::PackedGemm}) {
            expect_matrix(a, b, s);
            expect_matrix(af, bf, s);  // strided layouts: copied for the kernels that need rows
        }
        const std::int64_t rows = std::min(n, m);
        std::vector<T> p(static_cast<std::size_t>(rows));
        auto ap = mb::MatrixView<T>::row_major(av.data(), rows, d), bp = mb::MatrixView<T>::row_major(bv.data(), rows, d);
        mb::paired_cosine_similarity(ap, bp, p.data());
        for (std::int64_t i = 0; i < rows; ++i) ASSERT_NEAR(p[i], ref_cos(ap, i, bp, i), tol<T>()) << "paired " << i;
        const auto apt = column_major_copy(std::vector<T>(av.begin(), av.begin() + rows * d), rows, d);
        const auto apf = mb::MatrixView<T>::col_major(apt.data(), rows, d);  // the strided pass
        mb::paired_cosine_similarity(apf, bp, p.data());
        for (std::int64_t i = 0; i < rows; ++i) ASSERT_NEAR(p[i], ref_cos(apf, i, bp, i), tol<T>()) << "paired F " << i;
        const std::vector<T> full = ref_matrix(a, b);
        const std::int64_t k = std::min<std::int64_t>(m, 4);
        for (std::size_t budget : {mb::kDefaultTopkBudget, mb::kMinTopkBudget}) {
            std::vector<T> vals(static_cast<std::size_t>(n * k));
            std::vector<std::int64_t> idx(static_cast<std::size_t>(n * k));
            mb::topk_cosine(a, b, k, vals.data(), idx.data(), budget);
            expect_topk(full, n, m, k, vals, idx);
        }
    }
}

TEST(Core, TopkOnThePackedGemmWithRowsOfAnyMagnitude) {
    SKIP_WITHOUT_PACKED_GEMM();
    // Large enough for the packed GEMM scorer (>= 2^29 multiply-adds, where the CPU has AVX-512).
    const std::int64_t n = 16, m = 33000, d = 1024, k = 3;
    auto av = any_scale_matrix<float>(n, d, 51), bv = any_scale_matrix<float>(m, d, 52);
    auto a = mb::MatrixView<float>::row_major(av.data(), n, d), b = mb::MatrixView<float>::row_major(bv.data(), m, d);
    const std::vector<float> full = ref_matrix(a, b);
    std::vector<float> vals(static_cast<std::size_t>(n * k));
    std::vector<std::int64_t> idx(static_cast<std::size_t>(n * k));
    mb::topk_cosine(a, b, k, vals.data(), idx.data());
    expect_topk(full, n, m, k, vals, idx);
}

TEST(Core, TopkSelectedInsideThePackedGemm) {
    SKIP_WITHOUT_PACKED_GEMM();
    // float32, >= 2^29 multiply-adds, > 8 queries: the packed GEMM offers each tile's survivors to per-worker
    // candidate buffers (no score matrix). k = 1, 10, 1000 and M; a NaN row of A (its whole row NaN: NaN ranks
    // first, ties by index), a NaN row of B (first in every row), a zero row of B (0), and B rows repeated
    // (exact ties: the smaller index first). The full matrix from the same packed GEMM holds the same float32
    // values, so the order must match exactly for every k.
    struct Case {
        std::int64_t n, m, d;
        std::size_t budget;
    };
    for (const Case c : {Case{40, 20000, 700, mb::kDefaultTopkBudget},    // one depth block, one tile of A
                         Case{33, 16000, 1100, mb::kDefaultTopkBudget},   // two depth blocks: partial sums
                         Case{300, 6000, 512, std::size_t{16} << 20}}) {  // k = 1000 there: tiles of A rows
        auto av = random_matrix<float>(c.n, c.d, 61), bv = random_matrix<float>(c.m, c.d, 62);
        std::fill(av.begin() + 3 * c.d, av.begin() + 4 * c.d, std::nanf(""));
        bv[77 * c.d + 5] = std::nanf("");
        std::fill(bv.begin() + 78 * c.d, bv.begin() + 79 * c.d, 0.0f);
        for (std::int64_t t : {100, 2500, 4900})  // rows 1100, 3500, 5900 copy rows 100, 2500, 4900
            std::copy(bv.begin() + t * c.d, bv.begin() + (t + 1) * c.d, bv.begin() + (t + 1000) * c.d);
        auto a = mb::MatrixView<float>::row_major(av.data(), c.n, c.d);
        auto b = mb::MatrixView<float>::row_major(bv.data(), c.m, c.d);
        std::vector<float> full(static_cast<std::size_t>(c.n * c.m));
        mb::cosine_similarity(a, b, full.data(), c.m, mb::Strategy::PackedGemm);  // the same kernel's values
        for (auto [k, one_worker] : {std::pair{std::int64_t{1}, false}, {std::int64_t{10}, false},
                                     {std::int64_t{1000}, false}, {std::int64_t{1000}, true}, {c.m, false}}) {
            std::vector<float> vals(static_cast<std::size_t>(c.n * k));
            std::vector<std::int64_t> idx(static_cast<std::size_t>(c.n * k));
            // One worker: its own k-th best is the row's (with several, a worker's bar sits far below it).
            const char* saved = std::getenv("METRIC_BINDINGS_NUM_THREADS");
            const std::string keep = saved != nullptr ? saved : "";
            if (one_worker) setenv("METRIC_BINDINGS_NUM_THREADS", "1", 1);
            mb::topk_cosine(a, b, k, vals.data(), idx.data(), c.budget);
            if (one_worker) {
                if (saved != nullptr) setenv("METRIC_BINDINGS_NUM_THREADS", keep.c_str(), 1);
                else unsetenv("METRIC_BINDINGS_NUM_THREADS");
            }
            expect_topk(full, c.n, c.m, k, vals, idx);  // the same kernel's values: the same order, exactly
            for (std::int64_t r = 0; r < k; ++r) ASSERT_EQ(idx[3 * k + r], r) << "NaN row: ties by index";
            for (std::int64_t i = 0; i < c.n; ++i)
                if (i != 3) ASSERT_EQ(idx[i * k], 77) << "the NaN column first, row " << i;
        }
    }
}

TYPED_TEST(Typed, TopkTiledSelectionWithNanAndTies) {
    // The tiles-then-heap selection (few queries: the fused scorer; float64: CBLAS) tests blocks of scores
    // against the heap's worst before looking at them one by one: a NaN column and repeated rows late in B
    // (after the heap is full), a NaN row of A (its bar is NaN), k from 1 to M, a budget that cuts B in tiles.
    using T = TypeParam;
    for (auto [n, m, d] : {std::tuple{3, 5000, 16}, std::tuple{12, 3000, 40}}) {
        auto av = random_matrix<T>(n, d, 71), bv = random_matrix<T>(m, d, 72);
        std::fill(av.begin() + d, av.begin() + 2 * d, std::numeric_limits<T>::quiet_NaN());  // row 1
        bv[(m - 100) * d + 3] = std::numeric_limits<T>::quiet_NaN();
        for (std::int64_t t : {10, 700})
            std::copy(bv.begin() + t * d, bv.begin() + (t + 1) * d, bv.begin() + (m - 50 + t / 100) * d);
        auto a = mb::MatrixView<T>::row_major(av.data(), n, d), b = mb::MatrixView<T>::row_major(bv.data(), m, d);
        std::vector<T> full(static_cast<std::size_t>(n * m));
        mb::cosine_similarity(a, b, full.data(), m, mb::Strategy::ScaleOutput);
        for (std::int64_t k : {std::int64_t{1}, std::int64_t{10}, std::int64_t{1000}, std::int64_t{m}}) {
            for (std::size_t budget : {mb::kDefaultTopkBudget, mb::kMinTopkBudget}) {
                std::vector<T> vals(static_cast<std::size_t>(n * k));
                std::vector<std::int64_t> idx(static_cast<std::size_t>(n * k));
                mb::topk_cosine(a, b, k, vals.data(), idx.data(), budget);
                if (k <= 10) expect_topk(full, n, m, k, vals, idx);
                for (std::int64_t r = 0; r < k; ++r) ASSERT_EQ(idx[k + r], r) << "NaN row: ties by index";
                for (std::int64_t i = 0; i < n; ++i) {
                    if (i != 1) ASSERT_EQ(idx[i * k], m - 100) << "the NaN column first, row " << i;
                    for (std::int64_t r = 2; r < k; ++r)  // after the NaN: best first, ties by index
                        if (i != 1) ASSERT_TRUE(vals[i * k + r - 1] > vals[i * k + r] ||
                                                (vals[i * k + r - 1] == vals[i * k + r] &&
                                                 idx[i * k + r - 1] < idx[i * k + r]))
                            << "row " << i << " rank " << r;
                }
            }
        }
    }
}
