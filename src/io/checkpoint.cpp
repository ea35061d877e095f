#include "fp4moe/checkpoint.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "io/json.hpp"
#include "parallel.hpp"

namespace fs = std::filesystem;

namespace fp4moe::ckpt {

const char* to_string(Scheme s) {
  switch (s) {
    case Scheme::Qwen3Moe: return "qwen3-moe";
    case Scheme::DeepSeek: return "deepseek";
    case Scheme::NemotronH: return "nemotron-h";
    case Scheme::Mixtral: return "mixtral";
  }
  return "?";
}

bool QuantConfig::excluded(const std::string& module) const {
  for (const auto& pat : exclude_modules)
    if (::fnmatch(pat.c_str(), module.c_str(), 0) == 0) return true;
  return false;
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool is_number(const std::string& s) {
  return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    const size_t e = s.find('.', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

// One parsed expert tensor name: <prefix>.experts.<E>.<proj>.<field>
struct ExpertName {
  std::string prefix, moe, proj, field;
  int64_t layer = -1, expert = -1;
};
std::optional<ExpertName> parse_expert_name(const std::string& name) {
  const auto p = split_dots(name);
  for (size_t i = 3; i + 4 <= p.size(); ++i) {
    if (i + 4 != p.size()) continue;  // <..>.layers.L.<moe>.experts.E.<proj>.<field>
    if (p[i] != "experts" || !is_number(p[i + 1])) continue;
    if (p[i - 3] != "layers" || !is_number(p[i - 2])) continue;
    ExpertName n;
    n.moe = p[i - 1];
    n.layer = std::stoll(p[i - 2]);
    n.expert = std::stoll(p[i + 1]);
    n.proj = p[i + 2];
    n.field = p[i + 3];
    for (size_t j = 0; j < i; ++j) n.prefix += (j ? "." : "") + p[j];
    return n;
  }
  return std::nullopt;
}

const json::Value* cfg_find(const json::Value& cfg, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (const json::Value* v = cfg.find(k); v && !v->is(json::Kind::Null)) return v;
  return nullptr;
}

}  // namespace

struct Checkpoint::Impl {
  std::string path, dir;
  std::vector<st::File> files;
  std::vector<std::string> file_names;
  std::unordered_map<std::string, int> where;  // tensor -> file index
  json::Value config;                          // {} when absent
  std::string config_text;
  QuantConfig quant;
  std::vector<MoeLayerInfo> layers;

  int64_t cfg_int(std::initializer_list<const char*> keys, int64_t def) const {
    const json::Value* v = cfg_find(config, keys);
    if (!v) return def;
    if (!v->is(json::Kind::Number) || !v->is_int)
      throw Error(dir + "/config.json: " + *keys.begin() + ": expected an integer, got " + json::dump(*v).substr(0, 60));
    return v->i64;
  }
  double cfg_num(std::initializer_list<const char*> keys, double def) const {
    const json::Value* v = cfg_find(config, keys);
    if (!v) return def;
    if (!v->is(json::Kind::Number))
      throw Error(dir + "/config.json: " + *keys.begin() + ": expected a number, got " + json::dump(*v).substr(0, 60));
    return v->num;
  }
  bool cfg_bool(std::initializer_list<const char*> keys, bool def) const {
    const json::Value* v = cfg_find(config, keys);
    if (!v) return def;
    if (!v->is(json::Kind::Bool))
      throw Error(dir + "/config.json: " + *keys.begin() + ": expected true or false, got " + json::dump(*v).substr(0, 60));
    return v->b;
  }
  std::string cfg_str(const char* key) const {
    const json::Value* v = config.find(key);
    return v && v->is(json::Kind::String) ? v->str : "";
  }

  void add_file(const std::string& fname) {
    const std::string full = dir + "/" + fname;
    files.emplace_back(full);
    file_names.push_back(full);
  }

  void read_quant_config(const json::Value& q, const std::string& src) {
    const json::Value* algo = q.find("quant_algo");
    if (!algo) return;
    if (!algo->is(json::Kind::String)) throw Error(src + ": quant_algo: expected a string, got " + json::dump(*algo).substr(0, 60));
    quant.source = src;
    quant.quant_algo = algo->str;
    quant.nvfp4 = algo->str == "NVFP4";
    quant.group_size = 0;
    if (const json::Value* g = q.find("group_size")) {
      if (!g->is(json::Kind::Number) || !g->is_int) throw Error(src + ": group_size: expected an integer, got " + json::dump(*g).substr(0, 60));
      quant.group_size = static_cast<int>(g->i64);
    }
    quant.exclude_modules.clear();
    for (const char* key : {"exclude_modules", "ignore"}) {
      const json::Value* ex = q.find(key);
      if (!ex || ex->is(json::Kind::Null)) continue;
      if (!ex->is(json::Kind::Array)) throw Error(src + ": " + key + ": expected an array of strings, got " + json::kind_name(ex->kind));
      for (const auto& s : ex->arr) {
        if (!s.is(json::Kind::String)) throw Error(src + ": " + key + ": expected strings, got " + json::dump(s).substr(0, 60));
        quant.exclude_modules.push_back(s.str);
      }
    }
  }
};

Checkpoint::Checkpoint(const std::string& path) : p_(std::make_unique<Impl>()) {
  Impl& I = *p_;
  I.path = path;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    I.dir = fs::path(path).parent_path().string();
    if (I.dir.empty()) I.dir = ".";
    I.files.emplace_back(path);
    I.file_names.push_back(path);
  } else if (fs::is_directory(path, ec)) {
    I.dir = path;
    const std::string index = path + "/model.safetensors.index.json";
    if (fs::exists(index)) {
      const json::Value idx = json::parse(read_text(index), index);
      const json::Value* wm = idx.find("weight_map");
      if (!wm || !wm->is(json::Kind::Object))
        throw Error(index + ": weight_map: expected an object {tensor: file}, got " + (wm ? json::kind_name(wm->kind) : "nothing"));
      std::map<std::string, int> file_idx;
      for (const auto& [tname, fv] : wm->obj) {
        if (!fv.is(json::Kind::String) || fv.str.empty() || fv.str.find('/') != std::string::npos || fv.str.find("..") != std::string::npos)
          throw Error(index + ": weight_map[\"" + tname + "\"]: expected a file name in the same directory, got " + json::dump(fv).substr(0, 80));
        auto it = file_idx.find(fv.str);
        if (it == file_idx.end()) {
          I.add_file(fv.str);
          it = file_idx.emplace(fv.str, static_cast<int>(I.files.size() - 1)).first;
        }
        if (!I.files[static_cast<size_t>(it->second)].find(tname))
          throw Error(index + ": tensor \"" + tname + "\": listed in " + fv.str + " but not found in that file");
        if (!I.where.emplace(tname, it->second).second) throw Error(index + ": tensor \"" + tname + "\": listed twice");
      }
    } else if (fs::exists(path + "/model.safetensors")) {
      I.add_file("model.safetensors");
    } else {
      std::vector<std::string> names;
      for (const auto& de : fs::directory_iterator(path))
        if (de.path().extension() == ".safetensors") names.push_back(de.path().filename().string());
      std::sort(names.begin(), names.end());
      for (const auto& n : names) I.add_file(n);
    }
    if (I.files.empty()) throw Error(path + ": expected a checkpoint directory with *.safetensors files, found none");
  } else {
    throw Error("checkpoint: expected a directory or a .safetensors file, got \"" + path + "\" (not found)");
  }
  if (I.where.empty())
    for (size_t f = 0; f < I.files.size(); ++f)
      for (const auto& t : I.files[f].tensors())
        if (!I.where.emplace(t.name, static_cast<int>(f)).second)
          throw Error(I.file_names[f] + ": tensor \"" + t.name + "\": also in another file of the checkpoint");

  I.config = json::Value::object();
  const std::string cfg_path = I.dir + "/config.json";
  if (fs::exists(cfg_path)) {
    I.config_text = read_text(cfg_path);
    I.config = json::parse(I.config_text, cfg_path);
    if (!I.config.is(json::Kind::Object)) throw Error(cfg_path + ": expected a JSON object");
    if (const json::Value* q = I.config.find("quantization_config"); q && q->is(json::Kind::Object))
      I.read_quant_config(*q, cfg_path + " quantization_config");
  }
  const std::string hq = I.dir + "/hf_quant_config.json";
  if (fs::exists(hq)) {
    const json::Value v = json::parse(read_text(hq), hq);
    const json::Value* q = v.find("quantization");
    if (!q || !q->is(json::Kind::Object)) throw Error(hq + ": quantization: expected an object, got " + (q ? json::kind_name(q->kind) : "nothing"));
    I.read_quant_config(*q, hq);
    if (const json::Value* pr = v.find("producer"); pr && pr->is(json::Kind::Object)) {
      const json::Value* n = pr->find("name");
      const json::Value* ver = pr->find("version");
      if (n && n->is(json::Kind::String)) I.quant.producer = n->str;
      if (ver && ver->is(json::Kind::String)) I.quant.producer += " " + ver->str;
    }
  }

  // Find the MoE layers from the expert tensor names.
  struct Acc {
    MoeLayerInfo info;
    std::map<int64_t, std::map<std::string, std::string>> experts;  // e -> proj -> weight tensor
  };
  std::map<std::pair<int64_t, std::string>, Acc> acc;
  for (const auto& [name, f] : I.where) {
    auto n = parse_expert_name(name);
    if (!n || n->field != "weight") continue;
    if (n->moe != "mlp" && n->moe != "mixer" && n->moe != "block_sparse_moe") continue;
    Acc& a = acc[{n->layer, n->prefix}];
    a.info.layer = n->layer;
    a.info.prefix = n->prefix;
    a.experts[n->expert][n->proj] = name;
  }
  for (auto& [key, a] : acc) {
    MoeLayerInfo& L = a.info;
    const std::string& pre = L.prefix;
    const std::string mt = I.cfg_str("model_type");
    if (pre.ends_with(".block_sparse_moe")) {
      L.scheme = Scheme::Mixtral;
      L.gate_name = "w1"; L.up_name = "w3"; L.down_name = "w2";
    } else if (pre.ends_with(".mixer")) {
      L.scheme = Scheme::NemotronH;
      L.gate_name = ""; L.up_name = "up_proj"; L.down_name = "down_proj";
    } else {
      L.gate_name = "gate_proj"; L.up_name = "up_proj"; L.down_name = "down_proj";
      L.scheme = (mt.rfind("deepseek", 0) == 0 || mt.rfind("kimi", 0) == 0 || I.where.count(pre + ".gate.e_score_correction_bias"))
                     ? Scheme::DeepSeek : Scheme::Qwen3Moe;
    }
    // Nemotron-H without a gate_proj is non-gated; a gate in a mixer means a gated variant.
    L.gated = L.scheme != Scheme::NemotronH;
    if (L.scheme == Scheme::NemotronH && a.experts.begin()->second.count("gate_proj")) {
      L.gated = true;
      L.gate_name = "gate_proj";
    }
    L.experts = a.experts.rbegin()->first + 1;
    for (int64_t e = 0; e < L.experts; ++e) {
      auto it = a.experts.find(e);
      for (const std::string& proj : {L.gate_name, L.up_name, L.down_name}) {
        if (proj.empty()) continue;
        const std::string want = detail::concat(pre, ".experts.", e, ".", proj, ".weight");
        if (it == a.experts.end() || !it->second.count(proj))
          throw Error(I.path + ": MoE layer " + std::to_string(L.layer) + ": tensor \"" + want + "\" is missing (experts 0.." +
                      std::to_string(L.experts - 1) + " expected)");
      }
    }
    const std::string down0 = detail::concat(pre, ".experts.0.", L.down_name, ".weight");
    const st::TensorInfo& d0 = I.files[static_cast<size_t>(I.where.at(down0))].info(down0);
    if (d0.shape.size() != 2) throw Error(I.path + ": tensor \"" + down0 + "\": expected 2 dimensions, got shape " + shape_str(d0.shape));
    L.quantized = d0.dtype == st::Dtype::U8;
    L.hidden = d0.shape[0];
    L.inter = L.quantized ? d0.shape[1] * 2 : d0.shape[1];
    const std::string up0 = detail::concat(pre, ".experts.0.", L.up_name, ".input_scale");
    L.has_input_scale = I.where.count(up0) > 0;
    for (const char* r : {".gate.weight", ".router.weight"})
      if (I.where.count(pre + r)) { L.router = pre + r; break; }
    for (const char* b : {".gate.e_score_correction_bias", ".router.e_score_correction_bias"})
      if (I.where.count(pre + b)) { L.correction_bias = pre + b; break; }
    I.layers.push_back(L);
  }
  std::sort(I.layers.begin(), I.layers.end(), [](const auto& a, const auto& b) { return a.layer < b.layer; });
}

Checkpoint::~Checkpoint() = default;
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;

const std::string& Checkpoint::path() const { return p_->path; }
std::string Checkpoint::architecture() const {
  const json::Value* a = p_->config.find("architectures");
  if (a && a->is(json::Kind::Array) && !a->arr.empty() && a->arr[0].is(json::Kind::String)) return a->arr[0].str;
  return "";
}
std::string Checkpoint::model_type() const { return p_->cfg_str("model_type"); }
const QuantConfig& Checkpoint::quant() const { return p_->quant; }
const std::vector<MoeLayerInfo>& Checkpoint::moe_layers() const { return p_->layers; }
const std::vector<std::string>& Checkpoint::files() const { return p_->file_names; }
size_t Checkpoint::tensor_count() const { return p_->where.size(); }
const std::string& Checkpoint::config_text() const { return p_->config_text; }

const MoeLayerInfo& Checkpoint::moe_layer(int64_t layer) const {
  std::string have;
  for (const auto& L : p_->layers) {
    if (L.layer == layer) return L;
    have += (have.empty() ? "" : ", ") + std::to_string(L.layer);
  }
  throw Error(detail::concat("--layer: expected one of the MoE layers of ", p_->path, " (",
                             have.empty() ? std::string("none found") : have, "), got ", layer));
}

bool Checkpoint::has(const std::string& name) const { return p_->where.count(name) > 0; }
const st::File& Checkpoint::file_of(const std::string& name) const {
  auto it = p_->where.find(name);
  if (it == p_->where.end()) throw Error(p_->path + ": tensor \"" + name + "\": not found in the checkpoint");
  return p_->files[static_cast<size_t>(it->second)];
}
const st::TensorInfo& Checkpoint::info(const std::string& name) const { return file_of(name).info(name); }
std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> v;
  v.reserve(p_->where.size());
  for (const auto& [k, f] : p_->where) v.push_back(k);
  std::sort(v.begin(), v.end());
  return v;
}

int64_t Checkpoint::topk() const {
  const int64_t k = p_->cfg_int({"num_experts_per_tok", "moe_topk", "top_k"}, -1);
  if (k < 1) throw Error(p_->dir + "/config.json: num_experts_per_tok: expected a positive integer (the router's top-k), got " +
                         (k == -1 ? std::string("nothing (no config.json or no such key)") : std::to_string(k)));
  return k;
}

Activation Checkpoint::activation(const MoeLayerInfo& L) const {
  if (L.gated) return Activation::SwiGLU;
  return Activation::ReLU2;
}

RoutingSpec Checkpoint::routing(const MoeLayerInfo& L) const {
  const Impl& I = *p_;
  RoutingSpec r;
  const std::string scoring = I.cfg_str("scoring_func");
  const bool sigmoid = scoring == "sigmoid" || L.scheme == Scheme::DeepSeek || L.scheme == Scheme::NemotronH ||
                       !L.correction_bias.empty();
  if (sigmoid) {
    r.method = RoutingMethod::SigmoidGroupedTopK;
    r.renormalize = I.cfg_bool({"norm_topk_prob"}, true);
    r.n_group = static_cast<int>(I.cfg_int({"n_group"}, 1));
    r.topk_group = static_cast<int>(I.cfg_int({"topk_group"}, 1));
    r.routed_scaling_factor = static_cast<float>(I.cfg_num({"routed_scaling_factor"}, 1.0));
  } else {
    r.method = RoutingMethod::SoftmaxTopK;
    // Mixtral always renormalizes; Qwen3-MoE says so in norm_topk_prob.
    r.renormalize = L.scheme == Scheme::Mixtral ? true : I.cfg_bool({"norm_topk_prob"}, true);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
namespace {

float scalar_f32(const Checkpoint& ck, const std::string& name) {
  const st::File& f = ck.file_of(name);
  const st::TensorInfo& t = f.info(name);
  if (t.dtype != st::Dtype::F32 || t.numel() != 1)
    throw Error(f.path() + ": tensor \"" + name + "\": expected an F32 scalar (shape [] or [1]), got " +
                st::dtype_name(t.dtype) + " " + shape_str(t.shape));
  float v;
  std::memcpy(&v, f.bytes(t).data(), 4);
  if (!std::isfinite(v) || v < 0)
    throw Error(detail::concat(f.path(), ": tensor \"", name, "\": expected a finite non-negative scale, got ", v));
  return v;
}

// The bytes of a tensor after checking its dtype and shape.
std::span<const uint8_t> checked(const Checkpoint& ck, const std::string& name, st::Dtype dt, std::vector<int64_t> shape) {
  const st::File& f = ck.file_of(name);
  const st::TensorInfo& t = f.info(name);
  if (t.dtype != dt || t.shape != shape)
    throw Error(f.path() + ": tensor \"" + name + "\": expected " + st::dtype_name(dt) + " " + shape_str(shape) + ", got " +
                st::dtype_name(t.dtype) + " " + shape_str(t.shape));
  return f.bytes(t);
}

// Float values of an unquantized weight of the given shape (BF16, F16 or F32).
std::vector<float> dense(const Checkpoint& ck, const std::string& name, std::vector<int64_t> shape) {
  const st::File& f = ck.file_of(name);
  const st::TensorInfo& t = f.info(name);
  if ((t.dtype != st::Dtype::BF16 && t.dtype != st::Dtype::F16 && t.dtype != st::Dtype::F32) || t.shape != shape)
    throw Error(f.path() + ": tensor \"" + name + "\": expected BF16, F16 or F32 " + shape_str(shape) + ", got " +
                st::dtype_name(t.dtype) + " " + shape_str(t.shape));
  return f.to_float(name);
}

struct QLinear {
  std::span<const uint8_t> w, s;
  float gs = 0, in_scale = -1;
};

QLinear qlinear(const Checkpoint& ck, const std::string& base, int64_t rows, int64_t cols, bool want_input) {
  QLinear q;
  q.w = checked(ck, base + ".weight", st::Dtype::U8, {rows, cols / 2});
  q.s = checked(ck, base + ".weight_scale", st::Dtype::F8_E4M3, {rows, cols / kBlock});
  q.gs = scalar_f32(ck, base + ".weight_scale_2");
  if (want_input) q.in_scale = scalar_f32(ck, base + ".input_scale");
  return q;
}

}  // namespace

LoadedLayer load_moe_layer(const Checkpoint& ck, int64_t layer, const std::function<void(int64_t, int64_t)>& progress) {
  const MoeLayerInfo& info = ck.moe_layer(layer);
  LoadedLayer out;
  out.info = info;
  const int64_t E = info.experts, H = info.hidden, I = info.inter;
  MoeSpec& s = out.spec;
  s.hidden = H;
  s.inter = I;
  s.experts = E;
  s.topk = ck.topk();
  s.activation = ck.activation(info);
  s.gate_up_order = GateUpOrder::GateUp;
  s.validate();
  const int64_t N1 = s.n1();
  const std::string where = detail::concat(ck.path(), ": MoE layer ", layer);

  if (info.quantized) {
    const QuantConfig& q = ck.quant();
    if (!q.source.empty() && !q.nvfp4)
      throw Error(q.source + ": quant_algo: expected NVFP4, got \"" + q.quant_algo + "\"");
    if (!q.source.empty() && q.group_size != 0 && q.group_size != kBlock)
      throw Error(detail::concat(q.source, ": group_size: expected 16, got ", q.group_size));
  }

  // Router and correction bias.
  out.routing = ck.routing(info);
  if (info.router.empty()) throw Error(where + ": router tensor \"" + info.prefix + ".gate.weight\" is missing");
  out.router = dense(ck, info.router, {E, H});
  if (!info.correction_bias.empty()) {
    const st::TensorInfo& t = ck.info(info.correction_bias);
    if (t.shape != std::vector<int64_t>{E})
      throw Error(ck.file_of(info.correction_bias).path() + ": tensor \"" + info.correction_bias + "\": expected shape " +
                  shape_str({E}) + ", got " + shape_str(t.shape));
    out.routing.correction_bias = ck.file_of(info.correction_bias).to_float(info.correction_bias);
  }
  if (out.routing.method == RoutingMethod::SigmoidGroupedTopK && E % out.routing.n_group != 0)
    throw Error(detail::concat(where, ": n_group: expected a divisor of ", E, " experts, got ", out.routing.n_group));

  NvFp4Layer& L = out.nvfp4;
  L.spec = s;
  L.w13.resize(static_cast<size_t>(E * N1 * H / 2));
  L.w13_scale.resize(static_cast<size_t>(E * N1 * H / kBlock));
  L.w2.resize(static_cast<size_t>(E * H * I / 2));
  L.w2_scale.resize(static_cast<size_t>(E * H * I / kBlock));
  L.w13_scale_2.resize(static_cast<size_t>(E));
  L.w2_scale_2.resize(static_cast<size_t>(E));
  auto name = [&](int64_t e, const std::string& proj) { return detail::concat(info.prefix, ".experts.", e, ".", proj); };
  const size_t w13n = static_cast<size_t>(N1 * H / 2), s13n = static_cast<size_t>(N1 * H / kBlock);
  const size_t w2n = static_cast<size_t>(H * I / 2), s2n = static_cast<size_t>(H * I / kBlock);

  if (!info.quantized) {
    // bf16 (f16/f32) experts: keep the originals as bf16 and quantize with ModelOpt's algorithm.
    Bf16Layer B;
    B.spec = s;
    B.slot.resize(static_cast<size_t>(E));
    B.w13.resize(static_cast<size_t>(E * N1 * H));
    B.w2.resize(static_cast<size_t>(E * H * I));
    bool rounded = false;
    std::atomic<int64_t> done{0};
    std::vector<uint8_t> was_rounded(static_cast<size_t>(E), 0);
    detail::parallel_for(E, [&](int64_t e) {
      B.slot[static_cast<size_t>(e)] = static_cast<int32_t>(e);
      std::vector<float> fc1;
      fc1.reserve(static_cast<size_t>(N1 * H));
      if (info.gated) {
        auto g = dense(ck, name(e, info.gate_name) + ".weight", {I, H});
        fc1.insert(fc1.end(), g.begin(), g.end());
      }
      auto u = dense(ck, name(e, info.up_name) + ".weight", {I, H});
      fc1.insert(fc1.end(), u.begin(), u.end());
      auto fc2 = dense(ck, name(e, info.down_name) + ".weight", {H, I});
      for (auto* v : {&fc1, &fc2})
        for (auto& x : *v) {
          const float r = round_bf16(x);
          if (r != x) was_rounded[static_cast<size_t>(e)] = 1;
          x = r;
        }
      for (size_t i = 0; i < fc1.size(); ++i) B.w13[static_cast<size_t>(e) * fc1.size() + i] = float_to_bf16(fc1[i]);
      for (size_t i = 0; i < fc2.size(); ++i) B.w2[static_cast<size_t>(e) * fc2.size() + i] = float_to_bf16(fc2[i]);
      // Gate and up as one tensor: one shared weight_scale_2, as ModelOpt exports siblings.
      const QuantizedMatrix q1 = quantize_weight(fc1, N1, H);
      const QuantizedMatrix q2 = quantize_weight(fc2, H, I);
      std::copy(q1.packed.begin(), q1.packed.end(), L.w13.begin() + static_cast<std::ptrdiff_t>(e * w13n));
      std::copy(q1.scales.begin(), q1.scales.end(), L.w13_scale.begin() + static_cast<std::ptrdiff_t>(e * s13n));
      std::copy(q2.packed.begin(), q2.packed.end(), L.w2.begin() + static_cast<std::ptrdiff_t>(e * w2n));
      std::copy(q2.scales.begin(), q2.scales.end(), L.w2_scale.begin() + static_cast<std::ptrdiff_t>(e * s2n));
      L.w13_scale_2[static_cast<size_t>(e)] = q1.global_scale;
      L.w2_scale_2[static_cast<size_t>(e)] = q2.global_scale;
      if (progress) progress(++done, E);
    });
    for (auto r : was_rounded) rounded |= r != 0;
    out.notes.push_back("unquantized experts: quantized here with ModelOpt's NVFP4 algorithm (gate and up share one "
                        "weight_scale_2); no input scales");
    if (rounded) out.notes.push_back("some expert weights were not bf16 values: rounded to bf16 first");
    out.bf16 = std::move(B);
    return out;
  }

  // NVFP4 experts.
  const bool want_in = info.has_input_scale;
  if (want_in) {
    L.a13_scale.resize(static_cast<size_t>(E));
    L.a2_scale.resize(static_cast<size_t>(E));
  }
  std::vector<float> gate_gs(static_cast<size_t>(E)), up_gs(static_cast<size_t>(E));
  std::vector<uint8_t> status(static_cast<size_t>(E), 0);  // 0 same, 1 folded, 2 requantized
  std::vector<uint8_t> in_differs(static_cast<size_t>(E), 0);
  std::atomic<int64_t> done{0};
  std::vector<std::vector<uint8_t>> orig_w13(static_cast<size_t>(E)), orig_s13(static_cast<size_t>(E));
  detail::parallel_for(E, [&](int64_t e) {
    uint8_t* w13 = L.w13.data() + e * w13n;
    uint8_t* s13 = L.w13_scale.data() + e * s13n;
    const QLinear up = qlinear(ck, name(e, info.up_name), I, H, want_in);
    const QLinear down = qlinear(ck, name(e, info.down_name), H, I, want_in);
    std::copy(down.w.begin(), down.w.end(), L.w2.begin() + static_cast<std::ptrdiff_t>(e * w2n));
    std::copy(down.s.begin(), down.s.end(), L.w2_scale.begin() + static_cast<std::ptrdiff_t>(e * s2n));
    L.w2_scale_2[static_cast<size_t>(e)] = down.gs;
    if (want_in) L.a2_scale[static_cast<size_t>(e)] = down.in_scale;
    if (!info.gated) {
      std::copy(up.w.begin(), up.w.end(), w13);
      std::copy(up.s.begin(), up.s.end(), s13);
      L.w13_scale_2[static_cast<size_t>(e)] = up.gs;
      if (want_in) L.a13_scale[static_cast<size_t>(e)] = up.in_scale;
    } else {
      const QLinear gate = qlinear(ck, name(e, info.gate_name), I, H, want_in);
      const size_t half_w = static_cast<size_t>(I * H / 2), half_s = static_cast<size_t>(I * H / kBlock);
      std::copy(gate.w.begin(), gate.w.end(), w13);
      std::copy(up.w.begin(), up.w.end(), w13 + half_w);
      std::copy(gate.s.begin(), gate.s.end(), s13);
      std::copy(up.s.begin(), up.s.end(), s13 + half_s);
      gate_gs[static_cast<size_t>(e)] = gate.gs;
      up_gs[static_cast<size_t>(e)] = up.gs;
      if (want_in) {
        // One FC1 input scale per expert: the larger one never saturates either half.
        L.a13_scale[static_cast<size_t>(e)] = std::max(gate.in_scale, up.in_scale);
        in_differs[static_cast<size_t>(e)] = gate.in_scale != up.in_scale;
      }
      if (gate.gs == up.gs) {
        L.w13_scale_2[static_cast<size_t>(e)] = gate.gs;
      } else {
        // Fold gs_x / g into the block scales of the half with the smaller scale, if every
        // folded block scale is exact: e4m3(s') * g == e4m3(s) * gs_x, checked in fp64
        // (exact: 4 + 24 significant bits).
        const float g = std::max(gate.gs, up.gs);
        const bool fold_up = up.gs < g;
        uint8_t* sh = s13 + (fold_up ? half_s : 0);
        const float gx = fold_up ? up.gs : gate.gs;
        std::vector<uint8_t> folded(sh, sh + half_s);
        bool exact = g > 0;
        for (size_t i = 0; i < half_s && exact; ++i) {
          const double sv = e4m3_decode(folded[i]);
          const double want = sv * static_cast<double>(gx);
          const uint8_t nb = e4m3_encode(static_cast<float>(want / static_cast<double>(g)));
          if (static_cast<double>(e4m3_decode(nb)) * static_cast<double>(g) != want) exact = false;
          folded[i] = nb;
        }
        if (exact) {
          std::copy(folded.begin(), folded.end(), sh);
          L.w13_scale_2[static_cast<size_t>(e)] = g;
          status[static_cast<size_t>(e)] = 1;
        } else {
          // Not representable: requantize the fused FC1 from its dequantized values.
          orig_w13[static_cast<size_t>(e)].assign(w13, w13 + w13n);
          orig_s13[static_cast<size_t>(e)].assign(s13, s13 + s13n);
          auto dg = dequantize_weight(w13, s13, I, H, gate.gs);
          auto du = dequantize_weight(w13 + half_w, s13 + half_s, I, H, up.gs);
          dg.insert(dg.end(), du.begin(), du.end());
          const QuantizedMatrix q = quantize_weight(dg, N1, H);
          std::copy(q.packed.begin(), q.packed.end(), w13);
          std::copy(q.scales.begin(), q.scales.end(), s13);
          L.w13_scale_2[static_cast<size_t>(e)] = q.global_scale;
          status[static_cast<size_t>(e)] = 2;
        }
      }
    }
    if (progress) progress(++done, E);
  });
  int64_t n_fold = 0, n_req = 0, n_in = 0;
  std::string req_list;
  for (int64_t e = 0; e < E; ++e) {
    n_fold += status[static_cast<size_t>(e)] == 1;
    if (status[static_cast<size_t>(e)] == 2) {
      ++n_req;
      if (n_req <= 8) req_list += (req_list.empty() ? "" : ", ") + std::to_string(e);
    }
    n_in += in_differs[static_cast<size_t>(e)];
  }
  out.notes.push_back(detail::concat("NVFP4 experts read as stored (", info.gated ? "gate and up fused in GateUp order" : "non-gated FC1",
                                     ", linear scale layout)"));
  if (n_fold)
    out.notes.push_back(detail::concat(n_fold, " expert(s): gate and up carry different weight_scale_2; the ratio was folded "
                                       "exactly into the e4m3 block scales of the smaller one (bit-exact)"));
  if (n_req) {
    out.notes.push_back(detail::concat(n_req, " expert(s) (", req_list, n_req > 8 ? ", ..." : "",
                                       "): gate and up carry different weight_scale_2 and the ratio is not exact in e4m3: "
                                       "FC1 was REQUANTIZED from the dequantized weights (lossy); the fp64 reference "
                                       "uses the checkpoint's own values"));
    NvFp4Layer orig = L;
    out.up_scale_2.resize(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      const size_t se = static_cast<size_t>(e);
      orig.w13_scale_2[se] = gate_gs[se];
      out.up_scale_2[se] = up_gs[se];
      if (status[se] == 2) {
        std::copy(orig_w13[se].begin(), orig_w13[se].end(), orig.w13.begin() + static_cast<std::ptrdiff_t>(e * w13n));
        std::copy(orig_s13[se].begin(), orig_s13[se].end(), orig.w13_scale.begin() + static_cast<std::ptrdiff_t>(e * s13n));
      } else if (status[se] == 1) {  // folded exactly: same values with one scale
        orig.w13_scale_2[se] = out.up_scale_2[se] = L.w13_scale_2[se];
      }
    }
    out.original = std::move(orig);
  }
  if (n_in)
    out.notes.push_back(detail::concat(n_in, " expert(s): gate and up carry different input_scale; fp4moe quantizes the FC1 "
                                       "input once per expert and uses the larger scale (exact in W4A16, an approximation "
                                       "of the unfused model in W4A4)"));
  if (!want_in) out.notes.push_back("no input_scale in the checkpoint: W4A4 needs calibrated scales");
  return out;
}

std::vector<double> reference_moe_fp64_dequant(const LoadedLayer& LL, const TensorView& x, const TensorView& ids,
                                               const TensorView& wts) {
  const NvFp4Layer& L = LL.original ? *LL.original : LL.nvfp4;
  const MoeSpec& s = LL.spec;
  const int64_t H = s.hidden, I = s.inter, N1 = s.n1(), k = s.topk, E = s.experts;
  const int64_t T = validate_inputs(s, x, ids, wts);
  validate_routing_values(s, ids, wts);
  std::vector<double> out(static_cast<size_t>(T * H), 0.0);
  if (T == 0) return out;
  std::vector<std::vector<int64_t>> pairs(static_cast<size_t>(E));
  std::vector<double> rw(static_cast<size_t>(T * k));
  for (int64_t p = 0; p < T * k; ++p) {
    const int64_t e = ids.dtype == DType::I32 ? ids.as<int32_t>()[p] : ids.as<int64_t>()[p];
    pairs[static_cast<size_t>(e)].push_back(p);
    rw[static_cast<size_t>(p)] = wts.dtype == DType::F32 ? wts.as<float>()[p] : bf16_to_float(wts.as<uint16_t>()[p]);
  }
  std::vector<double> z(static_cast<size_t>(T * k * H), 0.0);
  const uint16_t* xb = x.as<uint16_t>();
  auto deq = [](const uint8_t* packed, const uint8_t* scales, int64_t r, int64_t c, int64_t cols, double gs) {
    const uint8_t b = packed[(r * cols + c) / 2];
    const uint8_t code = (c & 1) ? unpack_hi(b) : unpack_lo(b);
    return double(e2m1_decode(code)) * double(e4m3_decode(scales[r * (cols / kBlock) + c / kBlock])) * gs;
  };
  detail::parallel_for(E, [&](int64_t e) {
    const auto& pe = pairs[static_cast<size_t>(e)];
    if (pe.empty()) return;
    const uint8_t* w1 = L.w13.data() + e * N1 * H / 2;
    const uint8_t* s1 = L.w13_scale.data() + e * N1 * H / kBlock;
    const uint8_t* w2 = L.w2.data() + e * H * I / 2;
    const uint8_t* s2 = L.w2_scale.data() + e * H * I / kBlock;
    const double g_lo = L.w13_scale_2[static_cast<size_t>(e)];
    const double g_hi = LL.original && !LL.up_scale_2.empty() ? LL.up_scale_2[static_cast<size_t>(e)] : g_lo;
    std::vector<double> W1(static_cast<size_t>(N1 * H)), W2(static_cast<size_t>(H * I));
    for (int64_t n = 0; n < N1; ++n)
      for (int64_t c = 0; c < H; ++c)
        W1[static_cast<size_t>(n * H + c)] = deq(w1, s1, n, c, H, (s.activation == Activation::SwiGLU && n >= I) ? g_hi : g_lo);
    for (int64_t o = 0; o < H; ++o)
      for (int64_t c = 0; c < I; ++c) W2[static_cast<size_t>(o * I + c)] = deq(w2, s2, o, c, I, L.w2_scale_2[static_cast<size_t>(e)]);
    std::vector<double> y(static_cast<size_t>(N1)), h(static_cast<size_t>(I));
    for (int64_t p : pe) {
      const int64_t t = p / k;
      for (int64_t n = 0; n < N1; ++n) {
        double acc = 0;
        for (int64_t c = 0; c < H; ++c) acc += double(bf16_to_float(xb[t * H + c])) * W1[static_cast<size_t>(n * H + c)];
        y[static_cast<size_t>(n)] = acc;
      }
      for (int64_t i = 0; i < I; ++i) {
        if (s.activation == Activation::SwiGLU) {
          const double g = y[static_cast<size_t>(i)], u = y[static_cast<size_t>(I + i)];
          h[static_cast<size_t>(i)] = g / (1.0 + std::exp(-g)) * u;
        } else {
          const double r = y[static_cast<size_t>(i)] > 0 ? y[static_cast<size_t>(i)] : 0;
          h[static_cast<size_t>(i)] = r * r;
        }
      }
      for (int64_t o = 0; o < H; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < I; ++i) acc += h[static_cast<size_t>(i)] * W2[static_cast<size_t>(o * I + i)];
        z[static_cast<size_t>(p * H + o)] = acc;
      }
    }
  });
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t o = 0; o < H; ++o)
        out[static_cast<size_t>(t * H + o)] += rw[static_cast<size_t>(t * k + j)] * z[static_cast<size_t>((t * k + j) * H + o)];
  return out;
}

}  // namespace fp4moe::ckpt
