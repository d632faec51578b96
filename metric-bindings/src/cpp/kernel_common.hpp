// Internals shared by the kernels in cosine.cpp and packed_gemm.cpp; not part of the public API.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <thread>
#include <utility>

namespace metric_bindings::detail {

/// Scratch kept between calls is freed after a call that grew it above this (one huge call must not pin its
/// memory); below it, it is reused: a fresh multi-MiB allocation costs a page fault per 4 KiB on first touch,
/// measured at 10-25 % of the GEMM itself at (4096, 4096, 512).
inline constexpr std::size_t kKeepScratchBytes = std::size_t{64} << 20;

/// The one scratch-buffer type of the kernels: growable, 64-byte aligned (aligned loads of packed panels), not
/// zero-filled (std::vector would write every byte once more: for a copy of a large B, a whole extra pass).
/// One ownership rule: a Scratch belongs either to one call (a local) or to one thread between calls (a
/// thread_local, or a slot of the packed GEMM's pool that a helper thread holds for the length of a call), and
/// its owner calls trim() when a call ends.
template <typename T>
class Scratch {
   public:
    /// At least count elements (old contents are lost when it grows).
    T* get(std::size_t count) {
        if (count > cap_) {
            const std::size_t bytes = (std::max<std::size_t>(count, 1) * sizeof(T) + 63) / 64 * 64;
            T* p = static_cast<T*>(std::aligned_alloc(64, bytes));
            if (p == nullptr) throw std::bad_alloc();
            data_.reset(p);
            cap_ = count;
        }
        return data_.get();
    }
    T* data() { return data_.get(); }
    const T* data() const { return data_.get(); }
    T& operator[](std::size_t i) { return data_.get()[i]; }
    std::size_t bytes() const { return cap_ * sizeof(T); }
    /// Frees the memory if it is above kKeepScratchBytes.
    void trim() {
        if (bytes() > kKeepScratchBytes) {
            data_.reset();
            cap_ = 0;
        }
    }

   private:
    struct Free {
        void operator()(T* p) const { std::free(p); }
    };
    std::unique_ptr<T, Free> data_;
    std::size_t cap_ = 0;
};

/// Threads for our own passes (norms, scaling, row-wise, top-k selection); BLAS has its own setting.
/// METRIC_BINDINGS_NUM_THREADS overrides the number of hardware threads.
inline std::int64_t own_threads() {
    if (const char* env = std::getenv("METRIC_BINDINGS_NUM_THREADS")) {
        const long v = std::strtol(env, nullptr, 10);
        if (v > 0) return v;
    }
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::thread::hardware_concurrency()));
}

/// The most threads parallel_for runs at once: own_threads(), read on every call, so that a change of
/// METRIC_BINDINGS_NUM_THREADS is followed (a getenv costs far less than starting one thread).
inline std::int64_t max_threads() { return own_threads(); }

/// Runs f(begin, end) over [0, n) on up to `threads` threads when each gets >= grain items (parallel_for below:
/// up to max_threads()).
///
/// Built for a busy machine: work is handed out in small chunks from a shared counter, the calling thread
/// takes chunks too, and it waits only for chunks that a helper has actually claimed. A helper that the OS has
/// not scheduled yet (common on 2 shared cores, or right after a BLAS call while OpenBLAS workers spin) is not
/// waited for: when it finally runs it finds no work left and exits without touching f. Joining helpers
/// instead would add a scheduler time slice (several ms) to every call.
template <typename F>
void parallel_for_on(std::int64_t threads, std::int64_t n, std::int64_t grain, F&& f) {
    const std::int64_t hw = std::max<std::int64_t>(1, threads);
    const std::int64_t nt = std::min<std::int64_t>(hw, std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, grain)));
    if (nt <= 1) {
        f(std::int64_t{0}, n);
        return;
    }
    struct State {
        std::atomic<std::int64_t> next{0};
        std::atomic<std::int64_t> in_flight{0};  // helpers between "about to claim" and "chunk done"
    };
    auto state = std::make_shared<State>();
    const std::int64_t chunk = std::max<std::int64_t>(1, n / (nt * 16));
    auto* fp = &f;
    auto helper = [state, fp, n, chunk] {
        for (;;) {
            state->in_flight.fetch_add(1, std::memory_order_acq_rel);  // announce before claiming
            const std::int64_t b = state->next.fetch_add(chunk, std::memory_order_acq_rel);
            if (b >= n) {  // nothing left: never touch f (the caller may have returned)
                state->in_flight.fetch_sub(1, std::memory_order_acq_rel);
                return;
            }
            (*fp)(b, std::min(n, b + chunk));
            state->in_flight.fetch_sub(1, std::memory_order_acq_rel);
        }
    };
    for (std::int64_t t = 1; t < nt; ++t) std::thread(helper).detach();
    for (;;) {
        const std::int64_t b = state->next.fetch_add(chunk, std::memory_order_acq_rel);
        if (b >= n) break;
        f(b, std::min(n, b + chunk));
    }
    // Every chunk is claimed; wait for the ones helpers are still running (short: at most one chunk each).
    while (state->in_flight.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

/// parallel_for_on(max_threads(), ...).
template <typename F>
void parallel_for(std::int64_t n, std::int64_t grain, F&& f) {
    parallel_for_on(max_threads(), n, grain, std::forward<F>(f));
}

/// Squared row norms inside [kLo2, kHi2] are safe in every kernel: by Cauchy-Schwarz every dot product (and every
/// partial sum of one) is at most |a| |b| <= kHi2, far below T's overflow, and the products lost to underflow
/// (< D * T's smallest subnormal) are negligible next to |a| |b| >= kLo2. Rows outside it are rescaled by a power
/// of two (exact) and the work is redone: see RangeFlag.
template <typename T>
struct SafeRange;
template <>
struct SafeRange<float> {
    static constexpr double kLo2 = 0x1p-80, kHi2 = 0x1p80;
};
template <>
struct SafeRange<double> {
    static constexpr double kLo2 = 0x1p-800, kHi2 = 0x1p800;
};

/// True when a sum of squares (a squared row norm) lies in SafeRange<T>: the kernels' results are valid.
template <typename T>
inline bool in_safe_range(double sum_sq) {
    return sum_sq >= SafeRange<T>::kLo2 && sum_sq <= SafeRange<T>::kHi2;
}

/// Raised by a kernel that met a finite, non-zero row whose norm is outside SafeRange: its results for that row
/// are not valid and the caller redoes the work on rescaled rows. Written only in that rare case.
using RangeFlag = std::atomic<bool>;

/// The rare cases of inverse_norm: NaN for a row holding inf or NaN, 0 for a zero row, and otherwise a row whose
/// magnitude the kernels cannot handle as it is: flagged (the 0 returned is never used).
template <typename T>
[[gnu::cold, gnu::noinline]] T edge_inverse_norm(double sum_sq, const T* row, std::int64_t d, std::int64_t stride,
                                                  RangeFlag& out_of_range) {
    if (std::isnan(sum_sq)) return std::numeric_limits<T>::quiet_NaN();
    bool zero = true;
    for (std::int64_t k = 0; k < d; ++k) {
        const T x = row[k * stride];
        if (!std::isfinite(x)) return std::numeric_limits<T>::quiet_NaN();
        zero = zero && x == T(0);
    }
    if (zero) return T(0);  // zero row -> similarity 0 (scikit-learn's convention)
    out_of_range.store(true, std::memory_order_relaxed);
    return T(0);
}

/// 1 / |row| from the row's sum of squares as a kernel accumulated it (row: d elements `stride` apart, read only
/// in the rare cases). Inside SafeRange: one division; otherwise see edge_inverse_norm.
template <typename T>
inline T inverse_norm(double sum_sq, const T* row, std::int64_t d, std::int64_t stride, RangeFlag& out_of_range) {
    if (in_safe_range<T>(sum_sq)) return static_cast<T>(1.0 / std::sqrt(sum_sq));
    return edge_inverse_norm(sum_sq, row, d, stride, out_of_range);
}

}  // namespace metric_bindings::detail
