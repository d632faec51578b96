// The machine's float32 FMA peak: every thread runs 12 independent chains of vector FMAs (enough to hide the
// FMA latency), nothing else. bench.py compiles it with -march=native and quotes our GEMM against it.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <immintrin.h>

#if defined(__AVX512F__)
using V = __m512;
constexpr int kLanes = 16;
static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V set1(float x) { return _mm512_set1_ps(x); }
static inline float first(V v) { return _mm512_cvtss_f32(v); }
#elif defined(__FMA__)
using V = __m256;
constexpr int kLanes = 8;
static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V set1(float x) { return _mm256_set1_ps(x); }
static inline float first(V v) { return _mm256_cvtss_f32(v); }
#else
#error "needs FMA (x86-64 with AVX2/FMA or AVX-512)"
#endif

static float run(long iterations) {
    V a0 = set1(1), a1 = set1(2), a2 = set1(3), a3 = set1(4), a4 = set1(5), a5 = set1(6), a6 = set1(7),
      a7 = set1(8), a8 = set1(9), a9 = set1(10), a10 = set1(11), a11 = set1(12);
    const V x = set1(0.999999f), y = set1(1e-7f);
    for (long it = 0; it < iterations; ++it) {
        a0 = fma(a0, x, y), a1 = fma(a1, x, y), a2 = fma(a2, x, y), a3 = fma(a3, x, y);
        a4 = fma(a4, x, y), a5 = fma(a5, x, y), a6 = fma(a6, x, y), a7 = fma(a7, x, y);
        a8 = fma(a8, x, y), a9 = fma(a9, x, y), a10 = fma(a10, x, y), a11 = fma(a11, x, y);
        asm volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7),
                     "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));  // 12 chains the compiler may not merge
    }
    return first(a0) + first(a1) + first(a2) + first(a3) + first(a4) + first(a5) + first(a6) + first(a7) +
           first(a8) + first(a9) + first(a10) + first(a11);
}

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : static_cast<int>(std::thread::hardware_concurrency());
    const long iterations = 100'000'000;
    std::vector<std::thread> pool;
    std::vector<float> sink(static_cast<std::size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[static_cast<std::size_t>(t)] = run(iterations); });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double gflops = 2.0 * kLanes * 12.0 * static_cast<double>(iterations) * threads / s / 1e9;
    std::printf("%.1f %d %d %g\n", gflops, threads, kLanes, static_cast<double>(sink[0]));
    return 0;
}
