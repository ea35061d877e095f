// The quantizer: unquantized safetensors checkpoint -> ModelOpt-format NVFP4 checkpoint.
#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "fp4moe/bf16.hpp"
#include "fp4moe/checkpoint.hpp"
#include "fp4moe/error.hpp"
#include "fp4moe/format.hpp"
#include "io/json.hpp"
#include "parallel.hpp"

namespace fs = std::filesystem;

namespace fp4moe::ckpt {

namespace {

bool matches_any(const std::vector<std::string>& pats, const std::string& s) {
  for (const auto& p : pats)
    if (::fnmatch(p.c_str(), s.c_str(), 0) == 0) return true;
  return false;
}

// Linears that ModelOpt fuses share weight_scale_2 and input_scale: the group's key.
std::string sibling_key(const std::string& module) {
  const size_t dot = module.rfind('.');
  const std::string last = dot == std::string::npos ? module : module.substr(dot + 1);
  const std::string head = dot == std::string::npos ? "" : module.substr(0, dot + 1);
  if (last == "gate_proj" || last == "up_proj") return head + "{gate,up}_proj";
  if (last == "w1" || last == "w3") return head + "{w1,w3}";
  if (last == "q_proj" || last == "k_proj" || last == "v_proj") return head + "{q,k,v}_proj";
  return module;
}

float amax_of(const std::vector<float>& v) {
  float a = 0;
  for (float x : v) a = std::fmax(a, std::fabs(x));
  return a;
}

}  // namespace

QuantizeReport quantize_checkpoint(const std::string& in, const std::string& out_dir, const QuantizeOptions& opt) {
  if (opt.calib_path.empty() && !opt.no_input_scale)
    throw Error("calibration: expected a file of sample activations (--calib FILE) or --no-input-scale, got neither");
  if (!opt.calib_path.empty() && opt.no_input_scale)
    throw Error("calibration: expected either --calib FILE or --no-input-scale, got both");
  const Checkpoint ck(in);
  if (ck.quant().nvfp4 || !ck.quant().quant_algo.empty())
    throw Error(ck.path() + ": expected an unquantized checkpoint, got one quantized with " + ck.quant().quant_algo);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (!fs::is_directory(out_dir)) throw Error("output: expected a directory that can be created, got \"" + out_dir + "\"");
  if (fs::equivalent(fs::path(ck.files()[0]).parent_path(), out_dir, ec))
    throw Error("output: expected a directory other than the input's, got \"" + out_dir + "\"");

  QuantizeReport rep;
  // 1. Which tensors are quantized.
  std::vector<std::string> names = ck.tensor_names();
  std::map<std::string, std::vector<std::string>> groups;  // sibling key -> modules
  std::set<std::string> quantize;                           // modules
  for (const auto& n : names) {
    if (!n.ends_with(".weight")) continue;
    const std::string module = n.substr(0, n.size() - 7);
    const st::TensorInfo& t = ck.info(n);
    const bool floaty = t.dtype == st::Dtype::BF16 || t.dtype == st::Dtype::F16 || t.dtype == st::Dtype::F32;
    if (!floaty || t.shape.size() != 2 || t.shape[1] % kBlock != 0 || t.shape[1] == 0) continue;
    if (matches_any(opt.exclude, module)) continue;
    quantize.insert(module);
    groups[sibling_key(module)].push_back(module);
  }

  // 2. Calibration: input_scale (dequant direction) = amax / (6 * 448) per module.
  std::map<std::string, float> in_amax;
  if (!opt.calib_path.empty()) {
    const st::File cal(opt.calib_path);
    for (const auto& t : cal.tensors()) {
      if (!t.name.ends_with(".input"))
        throw Error(cal.path() + ": tensor \"" + t.name + "\": expected names \"<module>.input\" or \"<moe prefix>.input\"");
      const std::string mod = t.name.substr(0, t.name.size() - 6);
      const std::vector<float> x = cal.to_float(t.name);
      for (float v : x)
        if (!std::isfinite(v)) throw Error(cal.path() + ": tensor \"" + t.name + "\": expected finite activations");
      const MoeLayerInfo* moe = nullptr;
      for (const auto& L : ck.moe_layers())
        if (L.prefix == mod) moe = &L;
      if (!moe) {
        if (!quantize.count(mod))
          throw Error(cal.path() + ": tensor \"" + t.name + "\": expected a quantized module or a MoE layer prefix, got \"" + mod + "\"");
        in_amax[mod] = std::max(in_amax[mod], amax_of(x));
        continue;
      }
      const int64_t H = moe->hidden, I = moe->inter;
      if (t.shape.size() != 2 || t.shape[1] != H)
        throw Error(detail::concat(cal.path(), ": tensor \"", t.name, "\": expected shape [T, ", H, "], got ", shape_str(t.shape)));
      const int64_t T = t.shape[0];
      const float ax = amax_of(x);
      std::vector<float> h_amax(static_cast<size_t>(moe->experts), 0.0f);
      detail::parallel_for(moe->experts, [&](int64_t e) {
        auto nm = [&](const std::string& proj) { return detail::concat(moe->prefix, ".experts.", e, ".", proj, ".weight"); };
        const auto up = ck.file_of(nm(moe->up_name)).to_float(nm(moe->up_name));
        const auto gate = moe->gated ? ck.file_of(nm(moe->gate_name)).to_float(nm(moe->gate_name)) : std::vector<float>{};
        float a = 0;
        for (int64_t tk = 0; tk < T; ++tk) {
          const float* xr = x.data() + tk * H;
          for (int64_t i = 0; i < I; ++i) {
            float u = 0, g = 0;
            for (int64_t c = 0; c < H; ++c) u += xr[c] * up[static_cast<size_t>(i * H + c)];
            float hv;
            if (moe->gated) {
              for (int64_t c = 0; c < H; ++c) g += xr[c] * gate[static_cast<size_t>(i * H + c)];
              hv = g / (1.0f + std::exp(-g)) * u;
            } else {
              hv = u > 0 ? u * u : 0.0f;
            }
            a = std::fmax(a, std::fabs(round_bf16(hv)));
          }
        }
        h_amax[static_cast<size_t>(e)] = a;
      });
      for (int64_t e = 0; e < moe->experts; ++e) {
        auto mod_of = [&](const std::string& proj) { return detail::concat(moe->prefix, ".experts.", e, ".", proj); };
        for (const std::string& p : {moe->gate_name, moe->up_name})
          if (!p.empty()) in_amax[mod_of(p)] = std::max(in_amax[mod_of(p)], ax);
        in_amax[mod_of(moe->down_name)] = std::max(in_amax[mod_of(moe->down_name)], h_amax[static_cast<size_t>(e)]);
      }
    }
  }

  // 3. Per group: the shared weight_scale_2 (max over siblings = the fused tensor's amax rule)
  //    and the shared input amax.
  std::map<std::string, float> group_gs, group_in;
  for (const auto& [key, mods] : groups) {
    float gs = 0, ia = -1;
    for (const auto& m : mods) {
      const auto w = ck.file_of(m + ".weight").to_float(m + ".weight");
      std::vector<float> wb(w.size());
      for (size_t i = 0; i < w.size(); ++i) wb[i] = round_bf16(w[i]);  // ModelOpt quantizes the bf16 model
      gs = std::max(gs, modelopt_weight_scale_2(wb));
      if (auto it = in_amax.find(m); it != in_amax.end()) ia = std::max(ia, it->second);
    }
    group_gs[key] = gs;
    if (ia >= 0) group_in[key] = ia;
  }
  int64_t uncal = 0;
  if (!opt.calib_path.empty())
    for (const auto& m : quantize)
      if (!group_in.count(sibling_key(m))) ++uncal;
  if (uncal)
    rep.notes.push_back(detail::concat(uncal, " quantized linear(s) had no calibration data and carry no input_scale"));

  // 4. Write each shard.
  const int64_t total = static_cast<int64_t>(quantize.size());
  std::atomic<int64_t> done{0};
  std::map<std::string, std::string> weight_map;
  bool rounded = false;
  for (const std::string& fpath : ck.files()) {
    const st::File src(fpath);
    const std::string fname = fs::path(fpath).filename().string();
    st::Writer w;
    w.set_metadata("format", "pt");
    std::vector<const st::TensorInfo*> todo;
    for (const auto& t : src.tensors()) todo.push_back(&t);
    std::mutex mu;
    std::vector<std::string> errors;
    detail::parallel_for(static_cast<int64_t>(todo.size()), [&](int64_t i) {
      const st::TensorInfo& t = *todo[static_cast<size_t>(i)];
      const std::string module = t.name.ends_with(".weight") ? t.name.substr(0, t.name.size() - 7) : "";
      if (module.empty() || !quantize.count(module)) {
        std::lock_guard<std::mutex> lk(mu);
        w.add(t.name, t.dtype, t.shape, src.bytes(t).data(), t.nbytes());
        weight_map[t.name] = fname;
        ++rep.copied;
        return;
      }
      std::vector<float> f = src.to_float(t.name);
      bool r = false;
      for (auto& v : f) {
        const float b = round_bf16(v);
        r |= b != v;
        v = b;
      }
      const std::string key = sibling_key(module);
      const QuantizedMatrix q = quantize_weight(f, t.shape[0], t.shape[1], group_gs.at(key));
      std::lock_guard<std::mutex> lk(mu);
      rounded |= r;
      w.add(module + ".weight", st::Dtype::U8, {t.shape[0], t.shape[1] / 2}, q.packed);
      w.add(module + ".weight_scale", st::Dtype::F8_E4M3, {t.shape[0], t.shape[1] / kBlock}, q.scales);
      w.add(module + ".weight_scale_2", st::Dtype::F32, {}, &q.global_scale, 4);
      for (const char* suf : {".weight", ".weight_scale", ".weight_scale_2"}) weight_map[module + suf] = fname;
      if (auto it = group_in.find(key); it != group_in.end()) {
        const float is = it->second / (6.0f * 448.0f);
        w.add(module + ".input_scale", st::Dtype::F32, {}, &is, 4);
        weight_map[module + ".input_scale"] = fname;
        ++rep.calibrated;
      }
      ++rep.quantized;
      if (opt.progress) opt.progress(++done, total);
    });
    const std::string out = out_dir + "/" + fname;
    w.write(out);
    rep.files.push_back(out);
  }
  if (rounded) rep.notes.push_back("some weights were not bf16 values: rounded to bf16 before quantizing (as ModelOpt on a bf16 model)");

  // 5. Index, quant configs.
  if (ck.files().size() > 1) {
    json::Value idx = json::Value::object();
    json::Value meta = json::Value::object();
    int64_t bytes = 0;
    for (const auto& f : rep.files) bytes += static_cast<int64_t>(fs::file_size(f));
    meta.set("total_size", json::Value::integer(bytes));
    idx.set("metadata", std::move(meta));
    json::Value wm = json::Value::object();
    for (const auto& [k, v] : weight_map) wm.set(k, json::Value::string(v));
    idx.set("weight_map", std::move(wm));
    const std::string p = out_dir + "/model.safetensors.index.json";
    std::ofstream(p) << json::dump(idx, 2) << "\n";
    rep.files.push_back(p);
  }
  std::vector<json::Value> ex;
  for (const auto& e : opt.exclude) ex.push_back(json::Value::string(e));
  json::Value q = json::Value::object();
  q.set("quant_algo", json::Value::string("NVFP4"));
  q.set("kv_cache_quant_algo", json::Value::null());
  q.set("group_size", json::Value::integer(kBlock));
  q.set("exclude_modules", json::Value::array(ex));
  json::Value hq = json::Value::object();
  json::Value prod = json::Value::object();
  prod.set("name", json::Value::string("fp4moe"));
  prod.set("version", json::Value::string(FP4MOE_VERSION));
  hq.set("producer", std::move(prod));
  hq.set("quantization", q);
  std::ofstream(out_dir + "/hf_quant_config.json") << json::dump(hq, 2) << "\n";
  rep.files.push_back(out_dir + "/hf_quant_config.json");
  json::Value cfg = ck.config_text().empty() ? json::Value::object() : json::parse(ck.config_text(), "config.json");
  json::Value qc = q;
  qc.obj.insert(qc.obj.begin(), {"quant_method", json::Value::string("modelopt")});
  cfg.set("quantization_config", std::move(qc));
  std::ofstream(out_dir + "/config.json") << json::dump(cfg, 2) << "\n";
  rep.files.push_back(out_dir + "/config.json");
  return rep;
}

}  // namespace fp4moe::ckpt
