// nanobind module metric_bindings._core: converts arrays, runs the core's argument checks (checks.cpp) before it
// allocates results, releases the GIL and calls the C++ core. The core's ArgumentError becomes a ValueError with
// the same message. No numerics and no checks of its own here (only the strategy name, which only it parses).
//
// Inputs arrive as nb::ndarray views with their real strides (numpy arrays of any order, CPU torch tensors via
// DLPack): nothing is copied here; the core copies only when BLAS cannot read the layout. The Python layer
// (metric_bindings/_api.py) has already turned other dtypes into float32/float64, so every argument is marked
// noconvert: nanobind never makes a silent copy, least of all of an `out` buffer.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "cosine.hpp"
#include "packed_gemm.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nb = nanobind;
using namespace nb::literals;
namespace mb = metric_bindings;

namespace {

template <typename T>
using In = nb::ndarray<const T, nb::ndim<2>, nb::device::cpu>;
template <typename T>
using Out2 = nb::ndarray<T, nb::ndim<2>, nb::device::cpu>;
template <typename T>
using Out1 = nb::ndarray<T, nb::ndim<1>, nb::device::cpu>;
template <typename T>
using Np2 = nb::ndarray<nb::numpy, T, nb::ndim<2>>;
template <typename T>
using Np1 = nb::ndarray<nb::numpy, T, nb::ndim<1>>;

template <typename T>
mb::MatrixView<T> view(const In<T>& x) {
    return {x.data(), static_cast<std::int64_t>(x.shape(0)), static_cast<std::int64_t>(x.shape(1)),
            static_cast<std::int64_t>(x.stride(0)), static_cast<std::int64_t>(x.stride(1))};
}

/// Memory for a result array. Large results are 2 MiB-aligned and advised as transparent huge pages, as numpy
/// does for its own arrays: the first touch of a fresh 64 MiB result otherwise costs ~16k page faults, measured
/// at +22 ms (more than the GEMM itself) at (4096, 4096, 64).
void* result_memory(std::size_t bytes) {
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    if (bytes < 2 * kHuge) {
        void* p = std::malloc(std::max<std::size_t>(bytes, 1));
        if (p == nullptr) throw std::bad_alloc();
        return p;
    }
    const std::size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = std::aligned_alloc(kHuge, rounded);
    if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
    return p;
}

/// A new numpy array that owns a heap buffer (freed when Python drops the array).
template <typename T, std::size_t Dim>
nb::ndarray<nb::numpy, T, nb::ndim<Dim>> new_array(std::initializer_list<std::size_t> shape_) {
    std::size_t count = 1;
    for (auto s : shape_) count *= s;
    T* data = static_cast<T*>(result_memory(count * sizeof(T)));
    nb::capsule owner(data, [](void* p) noexcept { std::free(p); });
    return nb::ndarray<nb::numpy, T, nb::ndim<Dim>>(data, shape_, owner);
}

mb::Strategy parse_strategy(const std::string& s) {
    if (s == "auto") return mb::Strategy::Auto;
    if (s == "normalize") return mb::Strategy::NormalizeFirst;
    if (s == "scale") return mb::Strategy::ScaleOutput;
    if (s == "fused") return mb::Strategy::Fused;
    if (s == "packed") return mb::Strategy::PackedGemm;
    throw std::invalid_argument("strategy must be 'auto', 'normalize', 'scale', 'fused' or 'packed', not '" + s + "'");
}

const char* strategy_name(mb::Strategy s) {
    switch (s) {
        case mb::Strategy::NormalizeFirst: return "normalize";
        case mb::Strategy::ScaleOutput: return "scale";
        case mb::Strategy::Fused: return "fused";
        case mb::Strategy::PackedGemm: return "packed";
        default: return "auto";
    }
}

template <typename T>
Np2<T> cosine(In<T> a, In<T> b, std::optional<Out2<T>> out, const std::string& strategy) {
    static constexpr const char* fn = "cosine_similarity";
    const auto av = view(a), bv = view(b);
    const mb::Strategy st = parse_strategy(strategy);
    mb::check_matrix_args(fn, av, bv);  // before any allocation
    const std::int64_t n = av.rows, m = bv.rows;
    if (out) {
        const std::int64_t ldo = static_cast<std::int64_t>(out->stride(0));
        mb::check_output(fn, out->data(), static_cast<std::int64_t>(out->shape(0)),
                         static_cast<std::int64_t>(out->shape(1)), ldo, static_cast<std::int64_t>(out->stride(1)), n, m);
        {
            nb::gil_scoped_release release;
            mb::cosine_similarity(av, bv, out->data(), ldo, st);
        }
        return Np2<T>(*out);  // same buffer, kept alive by the caller's array
    }
    auto res = new_array<T, 2>({static_cast<std::size_t>(n), static_cast<std::size_t>(m)});
    {
        nb::gil_scoped_release release;
        mb::cosine_similarity(av, bv, res.data(), m, st);
    }
    return res;
}

template <typename T>
Np1<T> paired(In<T> a, In<T> b, std::optional<Out1<T>> out) {
    const auto av = view(a), bv = view(b);
    mb::check_paired_args(av, bv);
    const std::int64_t n = av.rows;
    if (out) {
        const std::int64_t st = static_cast<std::int64_t>(out->stride(0));
        mb::check_output("paired_cosine_similarity", out->data(), static_cast<std::int64_t>(out->shape(0)), st, n);
        {
            nb::gil_scoped_release release;
            mb::paired_cosine_similarity(av, bv, out->data(), st);
        }
        return Np1<T>(*out);
    }
    auto res = new_array<T, 1>({static_cast<std::size_t>(n)});
    {
        nb::gil_scoped_release release;
        mb::paired_cosine_similarity(av, bv, res.data(), 1);
    }
    return res;
}

template <typename T>
std::pair<Np2<T>, Np2<std::int64_t>> topk(In<T> a, In<T> b, std::int64_t k, std::size_t memory_budget) {
    const auto av = view(a), bv = view(b);
    mb::check_topk_args(av, bv, k, memory_budget);
    const std::int64_t n = av.rows, m = bv.rows;
    const std::int64_t kk = (n == 0 || m == 0) ? std::min<std::int64_t>(k, m) : k;  // empty results
    auto vals = new_array<T, 2>({static_cast<std::size_t>(n), static_cast<std::size_t>(kk)});
    auto idx = new_array<std::int64_t, 2>({static_cast<std::size_t>(n), static_cast<std::size_t>(kk)});
    {
        nb::gil_scoped_release release;
        mb::topk_cosine(av, bv, k, vals.data(), idx.data(), memory_budget);
    }
    return {vals, idx};
}

template <typename T>
Np2<T> gemm(In<T> a, In<T> b, std::optional<Out2<T>> out) {
    const auto av = view(a), bv = view(b);
    mb::check_matrix_args("gemm_nt", av, bv);
    const std::int64_t n = av.rows, m = bv.rows;
    if (out) {
        const std::int64_t ldc = static_cast<std::int64_t>(out->stride(0));
        mb::check_output("gemm_nt", out->data(), static_cast<std::int64_t>(out->shape(0)),
                         static_cast<std::int64_t>(out->shape(1)), ldc, static_cast<std::int64_t>(out->stride(1)), n, m);
        {
            nb::gil_scoped_release release;
            mb::gemm_nt(av, bv, out->data(), ldc);
        }
        return Np2<T>(*out);  // same buffer, kept alive by the caller's array
    }
    auto res = new_array<T, 2>({static_cast<std::size_t>(n), static_cast<std::size_t>(m)});
    {
        nb::gil_scoped_release release;
        mb::gemm_nt(av, bv, res.data(), m);
    }
    return res;
}

template <typename T>
void register_dtype(nb::module_& m) {
    m.def("cosine_similarity", &cosine<T>, "a"_a.noconvert(), "b"_a.noconvert(), "out"_a.noconvert() = nb::none(),
          "strategy"_a = "auto",
          "Cosine similarities of the rows of a (N, D) and b (M, D) as an (N, M) array (float32 or float64).");
    m.def("paired_cosine_similarity", &paired<T>, "a"_a.noconvert(), "b"_a.noconvert(),
          "out"_a.noconvert() = nb::none(), "Row-wise cos(a[i], b[i]) of two (N, D) arrays as an (N,) array.");
    m.def("topk_cosine", &topk<T>, "a"_a.noconvert(), "b"_a.noconvert(), "k"_a,
          "memory_budget"_a = mb::kDefaultTopkBudget,
          "For each row of a, the k most similar rows of b: (values (N, k), indices (N, k) int64), best first.");
    m.def("gemm_nt", &gemm<T>, "a"_a.noconvert(), "b"_a.noconvert(), "out"_a.noconvert() = nb::none(),
          "Plain a @ b.T through the same BLAS (the benchmarks' yardstick).");
    m.def(
        "blas_compatible", [](In<T> a) { return mb::blas_compatible(view(a)); }, "a"_a.noconvert(),
        "True when BLAS reads this array in place (no copy): row- or column-major with a leading dimension.");
}

}  // namespace

NB_MODULE(_core, m) {
    nb::register_exception_translator([](const std::exception_ptr& p, void*) {
        try {
            std::rethrow_exception(p);
        } catch (const mb::ArgumentError& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
    m.doc() = "C++/CBLAS cosine-similarity kernels (use the wrappers in metric_bindings, which convert dtypes).";
    register_dtype<float>(m);
    register_dtype<double>(m);
    m.def("blas_info", &mb::blas_info, "Which BLAS this build calls: name, configuration, core type, threads.");
    m.def(
        "choose_strategy",
        [](std::int64_t n, std::int64_t mm, std::int64_t d, bool single_precision) {
            return std::string(strategy_name(mb::choose_strategy(n, mm, d, single_precision)));
        },
        "n"_a, "m"_a, "d"_a, "single_precision"_a = true,
        "The strategy ('fused', 'packed', 'normalize' or 'scale') that strategy='auto' picks for these sizes.");
    m.def("packed_gemm_available", &mb::detail::packed_gemm_available,
          "True when the packed GEMM (strategy 'packed') can run: built in (GCC on x86-64) and the CPU has AVX-512."
          " Otherwise 'packed' runs 'scale'.");
    m.attr("DEFAULT_TOPK_BUDGET") = mb::kDefaultTopkBudget;
    m.attr("MIN_TOPK_BUDGET") = mb::kMinTopkBudget;
    m.def("num_threads", &mb::num_threads,
          "Threads for our own passes now: METRIC_BINDINGS_NUM_THREADS if set (> 0), else the hardware threads.");
}
