// Top-k selection shared by the kernels: the ranking, and the candidate buffers the packed GEMM fills from its
// micro-kernel's tiles (select while the tile is in registers: no score matrix is ever written). Not public API.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernel_common.hpp"

namespace metric_bindings::detail {

/// Ranking used by top-k: NaN above every number (so that it propagates visibly), then larger value, then
/// smaller index (deterministic ties). A strict total order on (value, index) pairs with distinct indices.
template <typename T>
inline bool better(T v1, std::int64_t i1, T v2, std::int64_t i2) {
    const bool n1 = std::isnan(v1), n2 = std::isnan(v2);
    if (n1 != n2) return n1;
    if (!n1 && v1 != v2) return v1 > v2;
    return i1 < i2;
}

/// One worker's candidates for the top-k of a block of query rows (float32: the packed GEMM's selection).
///
/// Per row: a buffer of capacity() entries and a threshold. A score s can still enter the row's top k only if
/// !(s < threshold): the caller tests whole vectors against it (one compare per score, almost every score is
/// rejected there) and offers only the survivors. Survivors are appended; a full buffer is cut back to its k
/// best (or a few more: binned_cut) and the threshold rises to the lowest value kept. No heap: an append costs
/// a store, and a cut is amortised over the entries it frees. Exact: a rejected score is below k entries of its
/// own row (ties pass the test and are ranked by `better`), so it is below the row's k-th best overall.
class TopkRows {
   public:
    struct Entry {
        float v;
        std::int64_t idx;
    };
    /// Entries kept per row: k, plus room to append before the next cut (at least 32).
    static std::int64_t capacity(std::int64_t k) { return k + std::max<std::int64_t>(k, 32); }
    /// The memory reset(rows, k) takes.
    static std::size_t bytes(std::int64_t rows, std::int64_t k) {
        return static_cast<std::size_t>(rows) *
               (static_cast<std::size_t>(capacity(k)) * sizeof(Entry) + sizeof(float) + sizeof(std::int64_t));
    }
    /// Empty buffers for `rows` rows and this k (allocates: call it in the caller's thread, where an allocation
    /// failure can be reported).
    void reset(std::int64_t rows, std::int64_t k);
    /// thresholds()[r]: row r's current bar (-inf while it holds fewer than capacity() entries; +inf when its k
    /// best are all NaN, so that only NaN passes).
    const float* thresholds() const { return thr_.data(); }
    /// Offers the columns whose bit is set in masks[r] of a tile of `rows` rows x 32 scores (row r at
    /// tile[32 r]), the tile's top-left score being (row0, col0). Scores below the bar are dropped here too.
    void offer(const float* tile, const std::uint32_t* masks, int rows, std::int64_t row0, std::int64_t col0);
    std::int64_t count(std::int64_t r) const { return count_.data()[r]; }
    const Entry* entries(std::int64_t r) const { return entries_.data() + r * cap_; }

   private:
    /// Makes room in row r's full buffer: drops every entry that k others beat and raises the bar.
    void cut(std::int64_t r);
    /// The usual cut: bins the buffer's values over their range (a counting pass, a compaction pass: no
    /// comparisons to mispredict), keeps the top bins that hold >= k entries. False (nothing done) with NaN,
    /// all values equal, or when the kept bins would free less than half the room; nth_element then.
    bool binned_cut(Entry* e, std::int64_t& n, float& bar) const;
    static constexpr std::int64_t kBinnedCutMin = 256;  // smaller buffers: nth_element is cheap enough
    static constexpr std::int64_t kMaxBins = 1024;
    std::int64_t k_ = 0, cap_ = 0;
    Scratch<float> thr_;
    Scratch<Entry> entries_;
    Scratch<std::int64_t> count_;
};

/// Extra memory merge_topk takes on each of its threads for nparts parts.
inline std::size_t merge_topk_bytes(std::size_t nparts, std::int64_t k) {
    return nparts * static_cast<std::size_t>(TopkRows::capacity(k)) * sizeof(TopkRows::Entry);
}

/// Row r's top k over the candidates of nparts workers (each has seen a share of the items), best first, into
/// values / indices (rows x k, row-major), for rows [0, rows). Runs on our threads.
void merge_topk(const TopkRows* parts, std::size_t nparts, std::int64_t rows, std::int64_t k, float* values,
                std::int64_t* indices);

}  // namespace metric_bindings::detail
