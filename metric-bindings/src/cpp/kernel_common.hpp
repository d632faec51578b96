// Internals shared by the kernels in cosine.cpp and packed_gemm.cpp; not part of the public API.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <thread>

namespace metric_bindings::detail {

/// Threads for our own passes (norms, scaling, row-wise, top-k selection); BLAS has its own setting.
/// METRIC_BINDINGS_NUM_THREADS overrides the number of hardware threads.
inline std::int64_t own_threads() {
    if (const char* env = std::getenv("METRIC_BINDINGS_NUM_THREADS")) {
        const long v = std::strtol(env, nullptr, 10);
        if (v > 0) return v;
    }
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::thread::hardware_concurrency()));
}

/// The most threads parallel_for runs at once (own_threads(), read once per process).
inline std::int64_t max_threads() {
    static const std::int64_t hw = own_threads();
    return hw;
}

/// Runs f(begin, end) over [0, n) on up to max_threads() threads when each gets >= grain items.
///
/// Built for a busy machine: work is handed out in small chunks from a shared counter, the calling thread
/// takes chunks too, and it waits only for chunks that a helper has actually claimed. A helper that the OS has
/// not scheduled yet (common on 2 shared cores, or right after a BLAS call while OpenBLAS workers spin) is not
/// waited for: when it finally runs it finds no work left and exits without touching f. Joining helpers
/// instead would add a scheduler time slice (several ms) to every call.
template <typename F>
void parallel_for(std::int64_t n, std::int64_t grain, F&& f) {
    const std::int64_t hw = max_threads();
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

/// 1 / sqrt(sum_sq) with the library's conventions: a zero row gives 0 (similarity 0, as scikit-learn does), an
/// overflowed sum (inf) gives NaN rather than a fake 0, and NaN stays NaN.
template <typename T>
T inverse_norm(double sum_sq) {
    if (sum_sq == 0.0) return T(0);                                        // zero row -> similarity 0
    if (std::isinf(sum_sq)) return std::numeric_limits<T>::quiet_NaN();  // overflow -> NaN, never a fake 0
    return static_cast<T>(1.0 / std::sqrt(sum_sq));                      // NaN stays NaN
}

}  // namespace metric_bindings::detail
