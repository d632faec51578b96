// Implementation of topk_select.hpp (compiled for the build's own target: it runs on any CPU).
#include "topk_select.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace metric_bindings::detail {

namespace {
inline bool entry_better(const TopkRows::Entry& x, const TopkRows::Entry& y) {
    return better(x.v, x.idx, y.v, y.idx);
}
}  // namespace

void TopkRows::reset(std::int64_t rows, std::int64_t k) {
    k_ = k;
    cap_ = capacity(k);
    const std::size_t r = static_cast<std::size_t>(std::max<std::int64_t>(rows, 1));
    float* thr = thr_.get(r);
    std::int64_t* count = count_.get(r);
    entries_.get(r * static_cast<std::size_t>(cap_));
    std::fill(thr, thr + r, -std::numeric_limits<float>::infinity());
    std::fill(count, count + r, std::int64_t{0});
}

void TopkRows::cut(std::int64_t r) {
    Entry* e = entries_.data() + r * cap_;
    std::int64_t& n = count_.data()[r];
    float& bar = thr_.data()[r];
    if (cap_ >= kBinnedCutMin && binned_cut(e, n, bar)) return;
    std::nth_element(e, e + (k_ - 1), e + n, entry_better);
    n = k_;
    const float worst = e[k_ - 1].v;  // the k-th best: everything before it is better
    bar = std::isnan(worst) ? std::numeric_limits<float>::infinity() : worst;
}

bool TopkRows::binned_cut(Entry* e, std::int64_t& n, float& bar) const {
    // The range of the buffer's numbers, split into bins (a monotone map: a lower bin holds only lower values).
    // NaN ranks above every number: always kept.
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    std::int64_t nans = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const float v = e[i].v;
        nans += v != v ? 1 : 0;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (nans >= k_ || !(hi > lo)) return false;  // k NaN, or numbers all equal (ties by index): the exact cut
    const int bins = static_cast<int>(std::clamp<std::int64_t>(n / 2, 16, kMaxBins));
    const float scale = static_cast<float>(bins) / (hi - lo);
    if (!(scale < std::numeric_limits<float>::max())) return false;
    auto bin_of = [&](float v) { return std::min(bins - 1, static_cast<int>((v - lo) * scale)); };
    std::uint32_t hist[kMaxBins];
    std::fill(hist, hist + bins, 0u);
    for (std::int64_t i = 0; i < n; ++i)
        if (const float v = e[i].v; v == v) ++hist[bin_of(v)];
    // NaN and the top bins, >= k entries in all: keep exactly those (each dropped value is below every kept one).
    int b = bins;
    std::int64_t kept = nans;
    while (kept < k_) kept += hist[--b];
    if (kept > k_ + (cap_ - k_) / 2) return false;  // too little freed (values bunched in a bin): exact cut
    std::int64_t w = 0;
    float worst = std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < n; ++i) {  // compaction in place
        const Entry x = e[i];
        const bool number = x.v == x.v, keep = !number || bin_of(x.v) >= b;
        e[w] = x;
        w += keep ? 1 : 0;
        worst = keep && number && x.v < worst ? x.v : worst;
    }
    n = w;
    bar = worst;  // the lowest number kept: a score below it is below >= k kept entries
    return true;
}

void TopkRows::offer(const float* tile, const std::uint32_t* masks, int rows, std::int64_t row0,
                     std::int64_t col0) {
    for (int r = 0; r < rows; ++r) {
        std::uint32_t mask = masks[r];
        if (mask == 0) continue;
        const std::int64_t row = row0 + r;
        Entry* e = entries_.data() + row * cap_;
        std::int64_t& n = count_.data()[row];
        const float* s = tile + 32 * r;
        while (mask != 0) {
            const int j = __builtin_ctz(mask);
            mask &= mask - 1;
            const float v = s[j];
            if (v < thr_.data()[row]) continue;  // the bar rose since the tile was tested (NaN never fails it)
            if (n == cap_) {
                cut(row);
                if (v < thr_.data()[row]) continue;
            }
            e[n++] = {v, col0 + j};
        }
    }
}

void merge_topk(const TopkRows* parts, std::size_t nparts, std::int64_t rows, std::int64_t k, float* values,
                std::int64_t* indices) {
    parallel_for(rows, std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(k, 1)),
                 [&](std::int64_t lo, std::int64_t hi) {
                     std::vector<TopkRows::Entry> all;
                     all.reserve(nparts * static_cast<std::size_t>(TopkRows::capacity(k)));
                     for (std::int64_t r = lo; r < hi; ++r) {
                         all.clear();
                         for (std::size_t p = 0; p < nparts; ++p)
                             all.insert(all.end(), parts[p].entries(r), parts[p].entries(r) + parts[p].count(r));
                         // Every part saw its share of the items and kept k of them unless it saw fewer: >= k
                         // entries in all (k <= M).
                         const auto kth = all.begin() + k;
                         if (static_cast<std::int64_t>(all.size()) > k)
                             std::nth_element(all.begin(), kth - 1, all.end(), entry_better);
                         std::sort(all.begin(), kth, entry_better);
                         for (std::int64_t i = 0; i < k; ++i) {
                             values[r * k + i] = all[static_cast<std::size_t>(i)].v;
                             indices[r * k + i] = all[static_cast<std::size_t>(i)].idx;
                         }
                     }
                 });
}

}  // namespace metric_bindings::detail
