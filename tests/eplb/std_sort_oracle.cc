// The independent oracle for the sort replica: libstdc++'s own std::sort with
// the same comparator (what torch's CPU sort(descending=True) runs).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

extern "C" void oracle_std_sort_desc(const float *key, int32_t n, int32_t *order) {
    std::vector<std::pair<float, int32_t>> items(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; i++)
        items[static_cast<size_t>(i)] = {key[i], i};
    std::sort(items.begin(), items.end(), [](const auto &a, const auto &b) {
        return (std::isnan(a.first) && !std::isnan(b.first)) || a.first > b.first;
    });
    for (int32_t i = 0; i < n; i++)
        order[i] = items[static_cast<size_t>(i)].second;
}

// McIlroy's "killer adversary" for quicksort, run against std::sort itself:
// values are frozen lazily so that every pivot is as bad as possible. Sorting
// the resulting keys again makes the same comparisons, so introsort exhausts
// its depth limit and takes its heapsort branch. Written for ascending order;
// the test negates the keys for the descending comparator.
extern "C" void oracle_antiqsort_keys(int32_t n, float *key) {
    const int32_t gas = n;
    std::vector<int32_t> val(static_cast<size_t>(n), gas), ptr(static_cast<size_t>(n));
    int32_t solid = 0, candidate = 0;
    for (int32_t i = 0; i < n; i++)
        ptr[static_cast<size_t>(i)] = i;
    std::sort(ptr.begin(), ptr.end(), [&](int32_t x, int32_t y) {
        auto &vx = val[static_cast<size_t>(x)], &vy = val[static_cast<size_t>(y)];
        if (vx == gas && vy == gas) {
            if (x == candidate)
                vx = solid++;
            else
                vy = solid++;
        }
        if (vx == gas)
            candidate = x;
        else if (vy == gas)
            candidate = y;
        return vx < vy;
    });
    for (int32_t i = 0; i < n; i++)
        key[i] = static_cast<float>(val[static_cast<size_t>(i)]);
}
