#include "fp4moe/routing.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "fp4moe/bf16.hpp"
#include "fp4moe/error.hpp"

namespace fp4moe {

const char* to_string(RoutingMethod m) {
  switch (m) {
    case RoutingMethod::SoftmaxTopK: return "softmax-topk";
    case RoutingMethod::TopKSoftmax: return "topk-softmax";
    case RoutingMethod::SigmoidGroupedTopK: return "sigmoid-grouped-topk";
  }
  return "?";
}

std::string RoutingSpec::describe() const {
  std::ostringstream os;
  switch (method) {
    case RoutingMethod::SoftmaxTopK: os << "softmax -> top-k" << (renormalize ? " -> renormalize" : ""); break;
    case RoutingMethod::TopKSoftmax: os << "top-k of logits -> softmax over the k"; break;
    case RoutingMethod::SigmoidGroupedTopK:
      os << "sigmoid + correction bias, " << n_group << " group(s) / top-" << topk_group
         << (renormalize ? ", renormalize" : "");
      break;
  }
  if (routed_scaling_factor != 1.0f) os << ", x" << routed_scaling_factor;
  return os.str();
}

namespace {
// Indices of the n largest values, descending, ties to the lower index.
std::vector<int32_t> top_n(const std::vector<float>& v, int64_t n, const std::vector<bool>* allowed = nullptr) {
  std::vector<int32_t> idx;
  for (int32_t i = 0; i < static_cast<int32_t>(v.size()); ++i)
    if (!allowed || (*allowed)[static_cast<size_t>(i)]) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[static_cast<size_t>(a)] > v[static_cast<size_t>(b)]; });
  idx.resize(static_cast<size_t>(std::min<int64_t>(n, static_cast<int64_t>(idx.size()))));
  return idx;
}
}  // namespace

Routing route(const TensorView& logits, int64_t topk, const RoutingSpec& spec) {
  check_tensor(logits, "router_logits", {DType::F32, DType::BF16}, {-1, -1});
  const int64_t T = logits.shape[0], E = logits.shape[1];
  FP4MOE_CHECK_ARG(topk >= 1 && topk <= E, "topk", detail::concat("1 <= topk <= E = ", E), topk);
  const bool grouped = spec.method == RoutingMethod::SigmoidGroupedTopK;
  if (grouped) {
    FP4MOE_CHECK_ARG(spec.n_group >= 1 && E % spec.n_group == 0, "n_group", detail::concat("a divisor of E = ", E),
                     spec.n_group);
    FP4MOE_CHECK_ARG(spec.topk_group >= 1 && spec.topk_group <= spec.n_group, "topk_group",
                     detail::concat("1..n_group = ", spec.n_group), spec.topk_group);
    FP4MOE_CHECK_ARG(topk <= spec.topk_group * (E / spec.n_group), "topk",
                     detail::concat("<= experts in the kept groups = ", spec.topk_group * (E / spec.n_group)), topk);
    FP4MOE_CHECK_ARG(spec.correction_bias.empty() || static_cast<int64_t>(spec.correction_bias.size()) == E,
                     "correction_bias", detail::concat(E, " values or none"), spec.correction_bias.size());
  }
  Routing r;
  r.tokens = T;
  r.topk = topk;
  r.ids.resize(static_cast<size_t>(T * topk));
  r.weights.resize(static_cast<size_t>(T * topk));
  std::vector<float> row(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E; ++e) {
      const float v = logits.dtype == DType::F32 ? logits.as<float>()[t * E + e]
                                                 : bf16_to_float(logits.as<uint16_t>()[t * E + e]);
      if (!std::isfinite(v))
        throw Error(detail::concat("router_logits[", t, ", ", e, "]: expected a finite logit, got ", v));
      row[static_cast<size_t>(e)] = v;
    }
    std::vector<int32_t> ids;
    std::vector<float> w;
    if (spec.method == RoutingMethod::SoftmaxTopK) {
      const float mx = *std::max_element(row.begin(), row.end());
      std::vector<float> p(row.size());
      double sum = 0;
      for (size_t e = 0; e < row.size(); ++e) sum += (p[e] = std::exp(row[e] - mx));
      for (auto& v : p) v = static_cast<float>(v / sum);
      ids = top_n(p, topk);
      for (auto i : ids) w.push_back(p[static_cast<size_t>(i)]);
    } else if (spec.method == RoutingMethod::TopKSoftmax) {
      ids = top_n(row, topk);
      const float mx = row[static_cast<size_t>(ids[0])];
      double sum = 0;
      for (auto i : ids) sum += std::exp(row[static_cast<size_t>(i)] - mx);
      for (auto i : ids) w.push_back(static_cast<float>(std::exp(row[static_cast<size_t>(i)] - mx) / sum));
    } else {
      std::vector<float> score(row.size()), choice(row.size());
      for (size_t e = 0; e < row.size(); ++e) {
        score[e] = 1.0f / (1.0f + std::exp(-row[e]));
        choice[e] = score[e] + (spec.correction_bias.empty() ? 0.0f : spec.correction_bias[e]);
      }
      const int64_t per = E / spec.n_group;
      std::vector<float> gscore(static_cast<size_t>(spec.n_group));
      for (int g = 0; g < spec.n_group; ++g) {
        std::vector<float> gv(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        auto top2 = top_n(gv, std::min<int64_t>(2, per));
        float sg = 0;
        for (auto i : top2) sg += gv[static_cast<size_t>(i)];
        gscore[static_cast<size_t>(g)] = sg;
      }
      auto keep = top_n(gscore, spec.topk_group);
      std::vector<bool> allowed(row.size(), false);
      for (auto g : keep)
        for (int64_t e = g * per; e < (g + 1) * per; ++e) allowed[static_cast<size_t>(e)] = true;
      ids = top_n(choice, topk, &allowed);
      for (auto i : ids) w.push_back(score[static_cast<size_t>(i)]);
    }
    if (spec.renormalize && spec.method != RoutingMethod::TopKSoftmax) {
      float sum = 0;
      for (auto v : w) sum += v;
      for (auto& v : w) v /= sum;
    }
    for (int64_t j = 0; j < topk; ++j) {
      r.ids[static_cast<size_t>(t * topk + j)] = ids[static_cast<size_t>(j)];
      r.weights[static_cast<size_t>(t * topk + j)] = w[static_cast<size_t>(j)] * spec.routed_scaling_factor;
    }
  }
  return r;
}

}  // namespace fp4moe
