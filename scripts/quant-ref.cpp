// llama.cpp as the reference for the quantized-model tests (scripts/quant-models.sh builds it
// against llama.cpp's library):
//   quant-ref quantize IN.gguf OUT.gguf TYPE   requantize with llama.cpp's quantizer (what
//                                              llama-quantize --allow-requantize does; TYPE-pure
//                                              as with --pure: no per-tensor type mix)
//   quant-ref dequant MODEL.gguf               per tensor, ggml's dequantization summarized as
//                                              "name type sum_i w_i*(1 + i%7) sum_i |w_i|"
//   quant-ref goldens MODEL.gguf < requests    answer requests, one per line:
//     L id id id ...   log-softmax after each prefix: "P i next next_logprob id:lp x5"
//     G id id id ...   32 greedy steps after the prompt: "G k id top1_logprob top2_logprob"
//     T hex            the ids of the UTF-8 text given in hex, special tokens parsed, no BOS
//                      added: "T id id id ..."
#include "gguf.h"
#include "llama.h"

#include <cstring>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static std::vector<double> log_softmax(const float * x, int n) {
    double m = x[0];
    for (int i = 1; i < n; i++) m = std::max(m, (double) x[i]);
    double s = 0;
    for (int i = 0; i < n; i++) s += std::exp((double) x[i] - m);
    double l = m + std::log(s);
    std::vector<double> out(n);
    for (int i = 0; i < n; i++) out[i] = (double) x[i] - l;
    return out;
}

static std::vector<int> top(const std::vector<double> & lp, int k) {
    std::vector<int> idx(lp.size());
    for (size_t i = 0; i < idx.size(); i++) idx[i] = (int) i;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int a, int b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
    idx.resize(k);
    return idx;
}

// Decodes `toks` at positions pos0.. with logits for every token; returns false on failure.
static bool decode(llama_context * ctx, const std::vector<llama_token> & toks, int pos0) {
    llama_batch b = llama_batch_init((int) toks.size(), 0, 1);
    for (size_t i = 0; i < toks.size(); i++) {
        b.token[i] = toks[i];
        b.pos[i] = pos0 + (int) i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = (int) toks.size();
    bool ok = llama_decode(ctx, b) == 0;
    llama_batch_free(b);
    return ok;
}

static const struct {
    const char * name;
    llama_ftype ftype;
} FTYPES[] = {
    {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
    {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},     {"Q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
    {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},     {"Q2_K", LLAMA_FTYPE_MOSTLY_Q2_K},
    {"Q3_K_S", LLAMA_FTYPE_MOSTLY_Q3_K_S}, {"Q3_K_M", LLAMA_FTYPE_MOSTLY_Q3_K_M},
    {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"Q5_K_S", LLAMA_FTYPE_MOSTLY_Q5_K_S}, {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M},
    {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},     {"IQ4_NL", LLAMA_FTYPE_MOSTLY_IQ4_NL},
    {"IQ4_XS", LLAMA_FTYPE_MOSTLY_IQ4_XS}, {"BF16", LLAMA_FTYPE_MOSTLY_BF16},
    {"F16", LLAMA_FTYPE_MOSTLY_F16},       {"F32", LLAMA_FTYPE_ALL_F32},
};

static int quantize(const char * in, const char * out, const char * type) {
    std::string name(type);
    const std::string pure_suffix = "-pure";
    bool pure = name.size() > pure_suffix.size() &&
                name.compare(name.size() - pure_suffix.size(), pure_suffix.size(), pure_suffix) == 0;
    if (pure) name.resize(name.size() - pure_suffix.size());
    for (const auto & f : FTYPES) {
        if (name == f.name) {
            llama_model_quantize_params p = llama_model_quantize_default_params();
            p.ftype = f.ftype;
            p.allow_requantize = true;
            p.pure = pure;
            return llama_model_quantize(in, out, &p) == 0 ? 0 : 1;
        }
    }
    fprintf(stderr, "unknown type %s\n", type);
    return 2;
}

static int dequant(const char * path) {
    ggml_context * ctx = nullptr;
    gguf_init_params ip = {false, &ctx};
    gguf_context * g = gguf_init_from_file(path, ip);
    if (!g) return 1;
    std::vector<float> row;
    for (ggml_tensor * t = ggml_get_first_tensor(ctx); t; t = ggml_get_next_tensor(ctx, t)) {
        const int64_t n = t->ne[0], rows = ggml_nrows(t);
        const auto * tr = ggml_get_type_traits(t->type);
        if (!tr->to_float && t->type != GGML_TYPE_F32) continue;
        row.resize(n);
        double sum = 0, abs = 0;
        int64_t i = 0;
        for (int64_t r = 0; r < rows; r++) {
            const char * src = (const char *) t->data + r * t->nb[1];
            if (t->type == GGML_TYPE_F32) memcpy(row.data(), src, n * sizeof(float));
            else tr->to_float(src, row.data(), n);
            for (int64_t j = 0; j < n; j++, i++) {
                sum += (double) row[j] * (double) (1 + i % 7);
                abs += std::fabs((double) row[j]);
            }
        }
        printf("%s %s %.17g %.17g\n", ggml_get_name(t), ggml_type_name(t->type), sum, abs);
    }
    gguf_free(g);
    ggml_free(ctx);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc == 3 && strcmp(argv[1], "dequant") == 0) return dequant(argv[2]);
    if (argc == 5 && strcmp(argv[1], "quantize") == 0) {
        llama_backend_init();
        return quantize(argv[2], argv[3], argv[4]);
    }
    if (argc != 3 || strcmp(argv[1], "goldens") != 0) {
        fprintf(stderr, "usage: %s quantize IN OUT TYPE | goldens MODEL.gguf < requests\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    // No repacked weight buffers (llama-cli's -nr): the AMX repacking path crashes on CPUs that
    // advertise AMX without the OS granting it, and plain layouts give the same numbers.
    mp.use_extra_bufts = false;
    llama_model * model = llama_model_load_from_file(argv[2], mp);
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 2048;
    cp.n_ubatch = 2048;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string kind;
        in >> kind;
        if (kind == "T") {
            std::string hex, text;
            in >> hex;
            for (size_t i = 0; i + 1 < hex.size(); i += 2) {
                text.push_back((char) std::stoi(hex.substr(i, 2), nullptr, 16));
            }
            std::vector<llama_token> ids(text.size() + 8);
            int n = llama_tokenize(vocab, text.data(), (int) text.size(), ids.data(),
                                   (int) ids.size(), false, true);
            if (n < 0) return 1;
            printf("T");
            for (int i = 0; i < n; i++) printf(" %d", ids[i]);
            printf("\n");
            fflush(stdout);
            continue;
        }
        std::vector<llama_token> toks;
        int t;
        while (in >> t) toks.push_back(t);
        if (toks.empty()) continue;
        llama_memory_clear(llama_get_memory(ctx), true);
        if (!decode(ctx, toks, 0)) return 1;
        if (kind == "L") {
            for (size_t i = 0; i < toks.size(); i++) {
                auto lp = log_softmax(llama_get_logits_ith(ctx, (int) i), n_vocab);
                int next = i + 1 < toks.size() ? toks[i + 1] : -1;
                printf("P %zu %d %.6f", i, next, next >= 0 ? lp[next] : 0.0);
                for (int id : top(lp, 5)) printf(" %d:%.6f", id, lp[id]);
                printf("\n");
            }
        } else if (kind == "G") {
            int pos = (int) toks.size();
            auto lp = log_softmax(llama_get_logits_ith(ctx, pos - 1), n_vocab);
            for (int k = 0; k < 32; k++) {
                auto best = top(lp, 2);
                printf("G %d %d %.6f %.6f\n", k, best[0], lp[best[0]], lp[best[1]]);
                if (!decode(ctx, {best[0]}, pos)) return 1;
                pos++;
                lp = log_softmax(llama_get_logits_ith(ctx, 0), n_vocab);
            }
        }
        fflush(stdout);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
