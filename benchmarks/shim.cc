// Google Benchmark (1.7.1) behind the C interface of bench.h.
#include "bench.h"

#include <benchmark/benchmark.h>

#include <regex.h>

#include <cstring>
#include <map>
#include <string>

namespace {

thread_local std::map<std::string, double> pending_counters;
std::string filter; /* --benchmark_filter, "" = none */
thread_local std::string error_message = "benchmark failed";

benchmark::TimeUnit parse_unit(const char *unit) {
    std::string u = unit ? unit : "us";
    if (u == "ns")
        return benchmark::kNanosecond;
    if (u == "ms")
        return benchmark::kMillisecond;
    if (u == "s")
        return benchmark::kSecond;
    return benchmark::kMicrosecond;
}

}  // namespace

extern "C" void bench_init(int argc, char **argv) {
    const char *flag = "--benchmark_filter=";
    for (int i = 1; i < argc; i++) /* the last one wins, as in Google Benchmark */
        if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0)
            filter = argv[i] + std::strlen(flag);
}

extern "C" int bench_selected(const char *name) {
    if (filter.empty() || filter == "all" || filter == ".")
        return 1;
    bool negate = filter[0] == '-';
    std::string pattern = negate ? filter.substr(1) : filter;
    regex_t re;
    if (regcomp(&re, pattern.c_str(), REG_EXTENDED | REG_NOSUB) != 0)
        return 1; /* Google Benchmark reports the bad filter itself */
    const bool match = regexec(&re, name, 0, nullptr, 0) == 0;
    regfree(&re);
    return match != negate;
}

extern "C" void bench_set_counter(const char *name, double value) {
    pending_counters[name] = value;
}

extern "C" void bench_set_error(const char *message) { error_message = message; }

extern "C" void bench_add_context(const char *key, const char *value) {
    benchmark::AddCustomContext(key, value);
}

extern "C" void bench_register(const bench_spec *spec_in) {
    const bench_spec spec = *spec_in;
    auto *b = benchmark::RegisterBenchmark(spec.name, [spec](benchmark::State &state) {
        pending_counters.clear();
        for (auto _ : state) {
            double seconds = spec.run(spec.arg);
            if (seconds < 0) {
                state.SkipWithError(error_message.c_str());
                break;
            }
            if (spec.manual_time)
                state.SetIterationTime(seconds);
        }
        // Rates in powers of 1000, comparable with datasheet TB/s and TFLOP/s.
        using C = benchmark::Counter;
        if (spec.flops > 0)
            state.counters["FLOP/s"] = C(spec.flops, C::kIsIterationInvariantRate, C::kIs1000);
        if (spec.bytes > 0)
            state.counters["B/s"] = C(spec.bytes, C::kIsIterationInvariantRate, C::kIs1000);
        if (spec.items > 0)
            state.counters[spec.items_name ? spec.items_name : "items/s"] =
                C(spec.items, C::kIsIterationInvariantRate, C::kIs1000);
        for (const auto &kv : pending_counters)
            state.counters[kv.first] = C(kv.second);
        if (spec.label)
            state.SetLabel(spec.label);
    });
    b->Unit(parse_unit(spec.unit));
    if (spec.manual_time)
        b->UseManualTime();
    if (spec.iterations > 0)
        b->Iterations(spec.iterations);
}

extern "C" int bench_main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
