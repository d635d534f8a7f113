// Writes the same event record N times as JSONL with RapidJSON (no HMAC): the anchor
// for the event-log writer's throughput. usage: rapidjson_bench RECORD.json N OUT
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

int main(int argc, char **argv) {
    if (argc != 4) { std::fprintf(stderr, "usage: %s RECORD.json N OUT\n", argv[0]); return 2; }
    std::ifstream in(argv[1]);
    std::stringstream text;
    text << in.rdbuf();
    rapidjson::Document record;
    record.Parse(text.str().c_str());
    if (record.HasParseError()) { std::fprintf(stderr, "bad record\n"); return 1; }
    long n = std::stol(argv[2]);
    std::FILE *out = std::fopen(argv[3], "w");
    rapidjson::StringBuffer buffer;
    auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < n; i++) {
        buffer.Clear();
        rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
        record.Accept(writer);
        std::fwrite(buffer.GetString(), 1, buffer.GetSize(), out);
        std::fputc('\n', out);
    }
    std::fflush(out);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fclose(out);
    std::printf("%.0f\n", n / seconds);
    return 0;
}
