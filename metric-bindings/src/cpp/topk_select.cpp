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
    std::nth_element(e, e + (k_ - 1), e + n, entry_better);
    n = k_;
    const float worst = e[k_ - 1].v;  // the k-th best: everything before it is better
    thr_.data()[r] = std::isnan(worst) ? std::numeric_limits<float>::infinity() : worst;
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
