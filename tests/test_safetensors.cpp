// safetensors reading/writing, and the rejection of malformed headers.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fp4moe/error.hpp"
#include "fp4moe/safetensors.hpp"
#include "io/json.hpp"

using namespace fp4moe;
namespace fs = std::filesystem;

namespace {

std::string tmpdir() {
  const auto d = fs::temp_directory_path() / ("fp4moe_st_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d.string();
}

std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data, int64_t len_override = -1) {
  std::vector<uint8_t> f(8 + header.size() + data.size());
  const uint64_t n = len_override >= 0 ? static_cast<uint64_t>(len_override) : header.size();
  std::memcpy(f.data(), &n, 8);
  if (!header.empty()) std::memcpy(f.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(f.data() + 8 + header.size(), data.data(), data.size());
  return f;
}

std::string write_bytes(const std::string& name, const std::vector<uint8_t>& b) {
  const std::string p = tmpdir() + "/" + name;
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return p;
}

// Expects opening the file to throw fp4moe::Error whose text holds every given fragment.
void expect_rejected(const std::vector<uint8_t>& bytes, const std::vector<std::string>& fragments) {
  const std::string p = write_bytes("bad.safetensors", bytes);
  try {
    st::File f(p);
    FAIL() << "accepted a malformed file; expected an error with \"" << fragments[0] << "\"";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find(p), std::string::npos) << "error does not name the file: " << w;
    for (const auto& fr : fragments) EXPECT_NE(w.find(fr), std::string::npos) << "missing \"" << fr << "\" in: " << w;
  }
}

}  // namespace

TEST(Json, ParsesAndDumps) {
  const auto v = json::parse(R"( {"a": [1, -2, 3.5, true, null, "x\u00e9\n"], "b": {"c": 18446744073709551615}} )", "t");
  ASSERT_TRUE(v.is(json::Kind::Object));
  const auto* a = v.find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->arr.size(), 6u);
  EXPECT_EQ(a->arr[1].i64, -2);
  EXPECT_DOUBLE_EQ(a->arr[2].num, 3.5);
  EXPECT_EQ(a->arr[5].str, "x\xc3\xa9\n");
  const auto* c = v.find("b")->find("c");
  EXPECT_TRUE(c->is_uint);
  EXPECT_FALSE(c->is_int);
  EXPECT_EQ(c->u64, 18446744073709551615ull);
  const auto again = json::parse(json::dump(v, 2), "t2");
  EXPECT_EQ(json::dump(again), json::dump(v));
}

TEST(Json, RejectsMalformed) {
  for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "01x", "\"\\q\"", "\"abc", "[1] 2", "tru",
                          "-", "1.", "1e", "\"\\ud800\"", "{\"a\":1,}", "\"a\tb\""}) {
    EXPECT_THROW(json::parse(bad, "t"), Error) << bad;
  }
  std::string deep(1000, '[');
  deep += std::string(1000, ']');
  try {
    json::parse(deep, "deep");
    FAIL() << "accepted nesting 1000 deep";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nesting"), std::string::npos);
  }
}

TEST(Safetensors, WriteThenReadRoundTrip) {
  st::Writer w;
  std::vector<uint16_t> a = {1, 2, 3, 4, 5, 6};
  std::vector<float> b = {1.5f, -2.25f};
  std::vector<uint8_t> c = {0x38, 0x40, 0x7e};
  w.add("layer.a", st::Dtype::BF16, {2, 3}, a);
  w.add("layer.b", st::Dtype::F32, {2}, b);
  w.add("c", st::Dtype::F8_E4M3, {3}, c);
  w.add("empty", st::Dtype::F32, {0, 4}, nullptr, 0);
  w.add("scalar", st::Dtype::F32, {}, b.data(), 4);
  w.set_metadata("format", "pt");
  EXPECT_THROW(w.add("c", st::Dtype::U8, {3}, c), Error);
  EXPECT_THROW(w.add("d", st::Dtype::F32, {3}, c), Error);  // 3 bytes for 12
  const std::string p = tmpdir() + "/rt.safetensors";
  w.write(p);
  st::File f(p);
  EXPECT_EQ(f.header().data_start % 8, 0u);
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 5u);
  const auto& ia = f.info("layer.a");
  EXPECT_EQ(ia.dtype, st::Dtype::BF16);
  EXPECT_EQ(ia.shape, (std::vector<int64_t>{2, 3}));
  auto ba = f.bytes(ia);
  ASSERT_EQ(ba.size(), 12u);
  EXPECT_EQ(std::memcmp(ba.data(), a.data(), 12), 0);
  EXPECT_EQ(f.to_float("layer.b"), b);
  EXPECT_EQ(f.to_float("c"), (std::vector<float>{1.0f, 2.0f, 448.0f}));
  EXPECT_EQ(f.info("scalar").shape.size(), 0u);
  EXPECT_EQ(f.to_float("scalar"), std::vector<float>{1.5f});
  EXPECT_EQ(f.info("empty").numel(), 0);
  const auto v = f.view("layer.a");
  EXPECT_EQ(v.dtype, DType::BF16);
  EXPECT_EQ(v.as<uint16_t>()[5], 6);
  try {
    f.info("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"nope\""), std::string::npos);
  }
  // the serialized bytes are deterministic
  EXPECT_EQ(w.serialize(), w.serialize());
}

TEST(Safetensors, RejectsTruncatedFiles) {
  st::Writer w;
  std::vector<float> v(64, 1.0f);
  w.add("w", st::Dtype::F32, {8, 8}, v);
  const auto good = w.serialize();
  for (size_t cut : {size_t{0}, size_t{5}, size_t{8}, size_t{20}, good.size() - 1}) {
    std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    const std::string p = write_bytes("trunc.safetensors", t);
    EXPECT_THROW(st::File f(p), Error) << "cut at " << cut;
  }
  std::vector<uint8_t> t(good.begin(), good.end() - 1);
  expect_rejected(t, {"tensor \"w\"", "out of range", "truncated"});
  expect_rejected({1, 2, 3}, {"truncated file", "got 3 bytes"});
}

TEST(Safetensors, RejectsHeaderLongerThanFile) {
  expect_rejected(raw_file("{}", {}, 1000), {"header length 1000 is larger than the file"});
  expect_rejected(raw_file("{}", {}, static_cast<int64_t>(INT64_MAX)), {"larger than the file"});
}

TEST(Safetensors, RejectsOverlapAndOutOfRange) {
  std::vector<uint8_t> data(32, 0);
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", data),
                  {"tensor \"b\"", "overlap", "tensor \"a\""});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[24,40]}})", data),
                  {"tensor \"a\"", "out of range", "32 bytes"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,8]}})", data),
                  {"tensor \"a\"", "begin <= end"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", data),
                  {"tensor \"a\"", "expected 16 bytes", "got 12"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551615]}})", data),
                  {"tensor \"a\"", "out of range"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-1,15]}})", data),
                  {"tensor \"a\"", "non-negative"});
  // same tensor twice
  expect_rejected(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", data),
                  {"tensor \"a\"", "twice"});
  // touching ranges and empty tensors are fine
  const auto ok = raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
                           R"("c":{"dtype":"U8","shape":[2,2],"data_offsets":[4,8]}})", data);
  st::File f(write_bytes("ok.safetensors", ok));
  EXPECT_EQ(f.tensors().size(), 3u);
}

TEST(Safetensors, RejectsBadDtypeShapeAndJson) {
  std::vector<uint8_t> data(16, 0);
  expect_rejected(raw_file(R"({"a":{"dtype":"F4","shape":[4],"data_offsets":[0,4]}})", data),
                  {"tensor \"a\"", "dtype", "\"F4\"", "BF16"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", data),
                  {"tensor \"a\"", "overflows"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F64","shape":[3037000500,3037000500],"data_offsets":[0,16]}})", data),
                  {"tensor \"a\"", "overflows"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data),
                  {"tensor \"a\"", "shape[0]", "non-negative"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}})", data),
                  {"tensor \"a\"", "shape[0]"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":"4","data_offsets":[0,16]}})", data),
                  {"tensor \"a\"", "shape"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4]}})", data), {"tensor \"a\"", "data_offsets"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":1}})", data),
                  {"tensor \"a\"", "unknown field"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", data), {"invalid JSON"});
  expect_rejected(raw_file(R"([1,2])", data), {"expected a JSON object"});
  expect_rejected(raw_file(R"({"__metadata__":{"k":1}})", data), {"__metadata__"});
  expect_rejected(raw_file(R"({"a":7})", data), {"tensor \"a\"", "expected an object"});
}

TEST(Safetensors, MissingFileIsAnError) {
  try {
    st::File f("/nonexistent/x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors"), std::string::npos);
  }
}
