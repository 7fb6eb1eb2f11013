// Google Benchmark (1.7.1) behind the C interface of bench.h.
#include "bench.h"

#include <benchmark/benchmark.h>

#include <regex.h>
#include <unistd.h>

#include <cerrno>
#include <ostream>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

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

namespace {

/* A string as a JSON string literal. */
std::string json_string(const std::string &s) {
    std::string r = "\"";
    for (unsigned char ch : s) {
        if (ch == '"' || ch == '\\') {
            r += '\\';
            r += char(ch);
        } else if (ch < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", ch);
            r += esc;
        } else {
            r += char(ch);
        }
    }
    return r + "\"";
}

/* A finite double as JSON (JSON has no inf/nan: null). */
std::string json_number(double v) {
    if (v != v || v > 1.7e308 || v < -1.7e308)
        return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

/*
 * The console table, flushed after every row, and with DINF_BENCH_ROWS=PATH
 * each finished row also appended to PATH as one JSON object per line (the
 * keys of Google Benchmark's JSON output: name, real_time, time_unit, label,
 * error_occurred, error_message, the counters), flushed at once. Google
 * Benchmark closes its --benchmark_out JSON only when the whole run ends (a
 * run stopped part-way leaves it invalid), so a run stopped by a time limit
 * (tools/gpu-check) keeps the rows it finished here.
 */
class RowsReporter : public benchmark::ConsoleReporter {
  public:
    RowsReporter(OutputOptions opts, std::FILE *rows) : ConsoleReporter(opts), rows_(rows) {}
    void ReportRuns(const std::vector<Run> &reports) override {
        ConsoleReporter::ReportRuns(reports);
        GetOutputStream().flush();
        if (!rows_)
            return;
        for (const Run &r : reports) {
            std::string line = "{\"name\": " + json_string(r.benchmark_name()) +
                               ", \"run_type\": " +
                               (r.run_type == Run::RT_Aggregate ? "\"aggregate\"" : "\"iteration\"") +
                               ", \"iterations\": " + std::to_string(int64_t(r.iterations)) +
                               ", \"real_time\": " + json_number(r.GetAdjustedRealTime()) +
                               ", \"time_unit\": " + json_string(benchmark::GetTimeUnitString(r.time_unit));
            if (!r.report_label.empty())
                line += ", \"label\": " + json_string(r.report_label);
            if (r.error_occurred)
                line += ", \"error_occurred\": true, \"error_message\": " + json_string(r.error_message);
            for (const auto &kv : r.counters)
                line += ", " + json_string(kv.first) + ": " + json_number(kv.second.value);
            line += "}\n";
            std::fputs(line.c_str(), rows_);
        }
        std::fflush(rows_);
    }

  private:
    std::FILE *rows_;
};

/* Whether a boolean Google Benchmark flag (--NAME, --NAME=true|1|yes|false|0|no)
 * was given as true; dflt when absent or "auto". The last one wins. */
bool flag_true(int argc, char **argv, const char *name, bool dflt) {
    const std::string bare = std::string("--") + name, eq = bare + "=";
    bool v = dflt;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a == bare) {
            v = true;
        } else if (a.compare(0, eq.size(), eq) == 0) {
            const std::string x = a.substr(eq.size());
            v = x == "auto" ? dflt : x == "true" || x == "1" || x == "yes" || x == "True" || x == "TRUE";
        }
    }
    return v;
}

}  // namespace

extern "C" int bench_main(int argc, char **argv) {
    /* the display options Google Benchmark would take from these flags */
    int opts = benchmark::ConsoleReporter::OO_None;
    if (flag_true(argc, argv, "benchmark_counters_tabular", false))
        opts |= benchmark::ConsoleReporter::OO_Tabular;
    if (flag_true(argc, argv, "benchmark_color", isatty(STDOUT_FILENO) != 0))
        opts |= benchmark::ConsoleReporter::OO_Color;
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    std::FILE *rows = nullptr;
    const char *rows_path = std::getenv("DINF_BENCH_ROWS");
    if (rows_path && *rows_path && !(rows = std::fopen(rows_path, "a"))) {
        std::fprintf(stderr, "deepinfra_bench: cannot open DINF_BENCH_ROWS=%s: %s\n", rows_path,
                     std::strerror(errno));
        return 1;
    }
    RowsReporter display(benchmark::ConsoleReporter::OutputOptions(opts), rows);
    benchmark::RunSpecifiedBenchmarks(&display);
    benchmark::Shutdown();
    if (rows)
        std::fclose(rows);
    return 0;
}
