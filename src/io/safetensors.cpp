#include "fp4moe/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "io/json.hpp"

static_assert(std::endian::native == std::endian::little, "fp4moe's safetensors code assumes a little-endian host");

namespace fp4moe::st {

namespace {
struct DtypeEntry {
  Dtype d;
  const char* name;
  size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},     {Dtype::I8, "I8", 1},
    {Dtype::U16, "U16", 2},   {Dtype::I16, "I16", 2},   {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::I32, "I32", 4},   {Dtype::U32, "U32", 4},
    {Dtype::F32, "F32", 4},   {Dtype::F64, "F64", 8},   {Dtype::I64, "I64", 8},
    {Dtype::U64, "U64", 8},   {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::F8_E5M2, "F8_E5M2", 1},
};

std::string all_dtype_names() {
  std::string s;
  for (const auto& e : kDtypes) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

std::string printable(std::string_view s) {
  std::string o;
  for (char c : s.substr(0, 200)) o += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
  if (s.size() > 200) o += "...";
  return o;
}

float half_to_float(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1F, m = h & 0x3FF;
  float v;
  if (e == 0) v = std::ldexp(static_cast<float>(m), -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp(1.0f + m / 1024.0f, e - 15);
  return s ? -v : v;
}
}  // namespace

const char* dtype_name(Dtype d) {
  for (const auto& e : kDtypes)
    if (e.d == d) return e.name;
  return "?";
}
size_t dtype_size(Dtype d) {
  for (const auto& e : kDtypes)
    if (e.d == d) return e.size;
  return 0;
}
std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const auto& e : kDtypes)
    if (name == e.name) return e.d;
  return std::nullopt;
}
std::optional<DType> to_core(Dtype d) {
  switch (d) {
    case Dtype::U8: return DType::U8;
    case Dtype::F8_E4M3: return DType::E4M3;
    case Dtype::F32: return DType::F32;
    case Dtype::BF16: return DType::BF16;
    case Dtype::I32: return DType::I32;
    case Dtype::I64: return DType::I64;
    default: return std::nullopt;
  }
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

const TensorInfo* Header::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

Header parse_header(const uint8_t* data, size_t size, const std::string& file) {
  auto fail = [&](const std::string& why) -> void { throw Error(file + ": " + why); };
  if (size < 8)
    fail(detail::concat("truncated file: expected at least 8 bytes (the header length), got ", size, " bytes"));
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  const uint64_t rest = size - 8;
  if (n > rest)
    fail(detail::concat("header length ", n, " is larger than the file: only ", rest,
                        " bytes follow the 8-byte length field (truncated or not a safetensors file)"));
  if (n > kMaxHeaderBytes) fail(detail::concat("header length: expected at most ", kMaxHeaderBytes, ", got ", n));
  if (n < 2) fail(detail::concat("header length: expected at least 2 (\"{}\"), got ", n));
  Header h;
  h.header_len = n;
  h.data_start = 8 + n;
  const uint64_t data_size = rest - n;
  const std::string_view text(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n));
  json::Value root = json::parse(text, file + ": header");
  if (!root.is(json::Kind::Object)) fail(std::string("header: expected a JSON object, got ") + json::kind_name(root.kind));

  for (auto& [key, v] : root.obj) {
    if (key == "__metadata__") {
      if (!v.is(json::Kind::Object))
        fail(std::string("__metadata__: expected an object of strings, got ") + json::kind_name(v.kind));
      for (auto& [mk, mv] : v.obj) {
        if (!mv.is(json::Kind::String))
          fail("__metadata__[\"" + printable(mk) + "\"]: expected a string, got " + json::kind_name(mv.kind));
        h.metadata[mk] = mv.str;
      }
      continue;
    }
    const std::string tn = "tensor \"" + printable(key) + "\"";
    auto tfail = [&](const std::string& why) { fail(tn + ": " + why); };
    if (key.empty()) fail("tensor name: expected a non-empty string, got \"\"");
    if (!v.is(json::Kind::Object)) tfail(std::string("expected an object, got ") + json::kind_name(v.kind));
    TensorInfo t;
    t.name = key;
    const json::Value *dt = nullptr, *sh = nullptr, *off = nullptr;
    for (auto& [fk, fv] : v.obj) {
      if (fk == "dtype") { if (dt) tfail("\"dtype\" given twice"); dt = &fv; }
      else if (fk == "shape") { if (sh) tfail("\"shape\" given twice"); sh = &fv; }
      else if (fk == "data_offsets") { if (off) tfail("\"data_offsets\" given twice"); off = &fv; }
      else tfail("unknown field \"" + printable(fk) + "\": expected dtype, shape, data_offsets");
    }
    if (!dt || !dt->is(json::Kind::String)) tfail("dtype: expected a string, got " + std::string(dt ? json::kind_name(dt->kind) : "nothing"));
    const auto d = parse_dtype(dt->str);
    if (!d) tfail("dtype: expected one of " + all_dtype_names() + ", got \"" + printable(dt->str) + "\"");
    t.dtype = *d;
    if (!sh || !sh->is(json::Kind::Array)) tfail("shape: expected an array of integers, got " + std::string(sh ? json::kind_name(sh->kind) : "nothing"));
    if (sh->arr.size() > 16) tfail(detail::concat("shape: expected at most 16 dimensions, got ", sh->arr.size()));
    uint64_t nbytes = dtype_size(t.dtype);
    bool overflow = false;
    for (size_t i = 0; i < sh->arr.size(); ++i) {
      const auto& dim = sh->arr[i];
      if (!dim.is(json::Kind::Number) || !dim.is_int || dim.i64 < 0)
        tfail(detail::concat("shape[", i, "]: expected a non-negative integer, got ",
                             dim.is(json::Kind::Number) ? json::dump(dim) : json::kind_name(dim.kind)));
      t.shape.push_back(dim.i64);
      overflow |= __builtin_mul_overflow(nbytes, static_cast<uint64_t>(dim.i64), &nbytes);
    }
    if (!overflow) {  // numel must also fit int64
      uint64_t ne = 1;
      for (auto s : t.shape) overflow |= __builtin_mul_overflow(ne, static_cast<uint64_t>(s), &ne);
      overflow |= ne > static_cast<uint64_t>(INT64_MAX);
    }
    if (overflow) tfail("shape " + shape_str(t.shape) + " x " + dtype_name(t.dtype) + ": byte size overflows 64 bits");
    if (!off || !off->is(json::Kind::Array) || off->arr.size() != 2)
      tfail("data_offsets: expected an array [begin, end], got " + (off ? json::dump(*off).substr(0, 100) : std::string("nothing")));
    for (const auto& o : off->arr)
      if (!o.is(json::Kind::Number) || !o.is_uint)
        tfail("data_offsets: expected non-negative integers, got " + json::dump(*off).substr(0, 100));
    t.begin = off->arr[0].u64;
    t.end = off->arr[1].u64;
    if (t.end < t.begin) tfail(detail::concat("data_offsets: expected begin <= end, got [", t.begin, ", ", t.end, "]"));
    if (t.end > data_size)
      tfail(detail::concat("data_offsets [", t.begin, ", ", t.end, "] out of range: the data section holds ", data_size,
                           " bytes (truncated file?)"));
    if (t.end - t.begin != nbytes)
      tfail(detail::concat("data_offsets [", t.begin, ", ", t.end, "]: expected ", nbytes, " bytes for shape ",
                           shape_str(t.shape), " x ", dtype_name(t.dtype), ", got ", t.end - t.begin));
    if (h.find(key)) tfail("given twice in the header");
    h.tensors.push_back(std::move(t));
  }
  // No two ranges may overlap (empty tensors occupy nothing).
  std::vector<const TensorInfo*> by_begin;
  for (const auto& t : h.tensors)
    if (t.nbytes() > 0) by_begin.push_back(&t);
  std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin || (a->begin == b->begin && a->name < b->name); });
  for (size_t i = 1; i < by_begin.size(); ++i)
    if (by_begin[i]->begin < by_begin[i - 1]->end)
      fail(detail::concat("tensor \"", printable(by_begin[i]->name), "\": data_offsets [", by_begin[i]->begin, ", ",
                          by_begin[i]->end, "] overlap tensor \"", printable(by_begin[i - 1]->name), "\" [",
                          by_begin[i - 1]->begin, ", ", by_begin[i - 1]->end, "]"));
  return h;
}

// ---- File ----

File::File(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat sb {};
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    throw Error(path + ": expected a regular file");
  }
  size_ = static_cast<size_t>(sb.st_size);
  if (size_ > 0) {
    void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(path + ": cannot map: " + std::strerror(err));
    }
    map_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  try {
    static const uint8_t empty[1] = {0};
    header_ = parse_header(map_ ? map_ : empty, size_, path);
  } catch (...) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    map_ = nullptr;
    throw;
  }
}

File::~File() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}
File::File(File&& o) noexcept : path_(std::move(o.path_)), map_(o.map_), size_(o.size_), header_(std::move(o.header_)) {
  o.map_ = nullptr;
  o.size_ = 0;
}
File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    path_ = std::move(o.path_);
    map_ = o.map_;
    size_ = o.size_;
    header_ = std::move(o.header_);
    o.map_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

const TensorInfo& File::info(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) throw Error(path_ + ": tensor \"" + std::string(name) + "\": not found in the file");
  return *t;
}

std::span<const uint8_t> File::bytes(const TensorInfo& t) const {
  if (t.nbytes() == 0) return {};
  return {map_ + header_.data_start + t.begin, static_cast<size_t>(t.nbytes())};
}

TensorView File::view(std::string_view name) const {
  const TensorInfo& t = info(name);
  const auto d = to_core(t.dtype);
  if (!d) throw Error(path_ + ": tensor \"" + t.name + "\": dtype " + dtype_name(t.dtype) + " has no fp4moe view");
  return TensorView(bytes(t).data(), *d, t.shape);
}

std::vector<float> File::to_float(std::string_view name) const {
  const TensorInfo& t = info(name);
  const auto b = bytes(t);
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case Dtype::F32: std::memcpy(&out[i], b.data() + 4 * i, 4); break;
      case Dtype::F64: { double v; std::memcpy(&v, b.data() + 8 * i, 8); out[i] = static_cast<float>(v); break; }
      case Dtype::BF16: { uint16_t v; std::memcpy(&v, b.data() + 2 * i, 2); out[i] = bf16_to_float(v); break; }
      case Dtype::F16: { uint16_t v; std::memcpy(&v, b.data() + 2 * i, 2); out[i] = half_to_float(v); break; }
      case Dtype::F8_E4M3: out[i] = e4m3_decode(b[i]); break;
      default:
        throw Error(path_ + ": tensor \"" + t.name + "\": dtype: expected F64, F32, F16, BF16 or F8_E4M3, got " +
                    dtype_name(t.dtype));
    }
  }
  return out;
}

// ---- Writer ----

void Writer::add(const std::string& name, Dtype dtype, std::vector<int64_t> shape, const void* data, size_t nbytes) {
  if (name.empty() || name == "__metadata__") throw Error("tensor name: expected a non-empty name other than __metadata__, got \"" + name + "\"");
  if (tensors_.count(name)) throw Error("tensor \"" + name + "\": added twice");
  uint64_t want = dtype_size(dtype);
  for (auto s : shape) {
    if (s < 0) throw Error("tensor \"" + name + "\": shape: expected non-negative extents, got " + shape_str(shape));
    if (__builtin_mul_overflow(want, static_cast<uint64_t>(s), &want))
      throw Error("tensor \"" + name + "\": shape " + shape_str(shape) + ": byte size overflows");
  }
  if (want != nbytes)
    throw Error(detail::concat("tensor \"", name, "\": expected ", want, " bytes for shape ", shape_str(shape), " x ",
                               dtype_name(dtype), ", got ", nbytes));
  Pending p{dtype, std::move(shape), {}};
  const auto* src = static_cast<const uint8_t*>(data);
  p.bytes.assign(src, src + nbytes);
  tensors_.emplace(name, std::move(p));
}

size_t Writer::data_bytes() const {
  size_t n = 0;
  for (const auto& [k, p] : tensors_) n += p.bytes.size();
  return n;
}

std::vector<uint8_t> Writer::serialize() const {
  json::Value root = json::Value::object();
  if (!metadata_.empty()) {
    json::Value m = json::Value::object();
    for (const auto& [k, v] : metadata_) m.set(k, json::Value::string(v));
    root.set("__metadata__", std::move(m));
  }
  uint64_t off = 0;
  for (const auto& [name, p] : tensors_) {
    json::Value t = json::Value::object();
    t.set("dtype", json::Value::string(dtype_name(p.dtype)));
    std::vector<json::Value> sh;
    for (auto s : p.shape) sh.push_back(json::Value::integer(s));
    t.set("shape", json::Value::array(std::move(sh)));
    t.set("data_offsets", json::Value::array({json::Value::integer(static_cast<int64_t>(off)),
                                              json::Value::integer(static_cast<int64_t>(off + p.bytes.size()))}));
    off += p.bytes.size();
    root.obj.emplace_back(name, std::move(t));
  }
  std::string text = json::dump(root);
  while (text.size() % 8) text += ' ';
  std::vector<uint8_t> out(8 + text.size() + off);
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  size_t pos = 8 + text.size();
  for (const auto& [name, p] : tensors_) {
    if (!p.bytes.empty()) std::memcpy(out.data() + pos, p.bytes.data(), p.bytes.size());
    pos += p.bytes.size();
  }
  return out;
}

void Writer::write(const std::string& path) const {
  const auto bytes = serialize();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(path + ": cannot write (is the directory there and writable?)");
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw Error(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": cannot rename the temporary file: " + std::strerror(errno));
}

}  // namespace fp4moe::st
