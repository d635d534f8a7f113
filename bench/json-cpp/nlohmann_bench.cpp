// Writes the same event record N times as JSONL with nlohmann/json (no HMAC): an
// anchor for the event-log writer's throughput. usage: nlohmann_bench RECORD.json N OUT
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <nlohmann/json.hpp>

int main(int argc, char **argv) {
    if (argc != 4) { std::fprintf(stderr, "usage: %s RECORD.json N OUT\n", argv[0]); return 2; }
    std::ifstream in(argv[1]);
    nlohmann::ordered_json record = nlohmann::ordered_json::parse(in);
    long n = std::stol(argv[2]);
    std::FILE *out = std::fopen(argv[3], "w");
    auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < n; i++) {
        std::string line = record.dump();
        std::fwrite(line.data(), 1, line.size(), out);
        std::fputc('\n', out);
    }
    std::fflush(out);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fclose(out);
    std::printf("%.0f\n", n / seconds);
    return 0;
}
