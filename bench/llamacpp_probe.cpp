// gpu-preflight's measuring probe for llama.cpp (built against libllama by bench/llamacpp_device.py).
//
//   llamacpp_probe quantize IN.gguf OUT.gguf FTYPE_ID
//   llamacpp_probe run MODEL.gguf key=value ...
//     keys: ctx batch ubatch seqs fa(-1 auto, 0 off, 1 on) ctk ctv (ggml type ids) ngl unified(0/1)
//           swa_full(0/1) decode(number of prompt tokens to decode, 0 = none) split (tensor split, "a,b")
//
// llama.cpp logs its buffer sizes ("model buffer size", "KV buffer size", "compute buffer size")
// on stderr as it loads; this program adds machine-readable lines on stdout:
//   PROBE dev=<name> free=<bytes> total=<bytes> stage=<loaded|context|decoded>
//   PROBE ok / PROBE error=<what>
// Nothing here is copied from llama.cpp; it only calls its public API (include/llama.h).
#include "llama.h"
#include "ggml-backend.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>

static void report_memory(const char * stage) {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU) {
            continue;
        }
        size_t free_b = 0, total_b = 0;
        ggml_backend_dev_memory(dev, &free_b, &total_b);
        printf("PROBE dev=%s free=%zu total=%zu stage=%s\n", ggml_backend_dev_name(dev), free_b, total_b, stage);
    }
    fflush(stdout);
}

static long arg_long(int argc, char ** argv, const char * key, long dflt) {
    const size_t n = strlen(key);
    for (int i = 3; i < argc; ++i) {
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') {
            return strtol(argv[i] + n + 1, nullptr, 10);
        }
    }
    return dflt;
}

static const char * arg_str(int argc, char ** argv, const char * key) {
    const size_t n = strlen(key);
    for (int i = 3; i < argc; ++i) {
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') {
            return argv[i] + n + 1;
        }
    }
    return nullptr;
}

static int do_quantize(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: llamacpp_probe quantize IN OUT FTYPE_ID\n");
        return 2;
    }
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = (enum llama_ftype) atoi(argv[4]);
    qp.nthread = 0;
    const uint32_t rc = llama_model_quantize(argv[2], argv[3], &qp);
    printf(rc == 0 ? "PROBE ok\n" : "PROBE error=quantize\n");
    return rc == 0 ? 0 : 1;
}

static int do_run(int argc, char ** argv) {
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = (int32_t) arg_long(argc, argv, "ngl", -1);
    std::vector<float> split;
    if (const char * s = arg_str(argc, argv, "split")) {
        for (const char * p = s; *p; ) {
            split.push_back(strtof(p, (char **) &p));
            if (*p == ',') ++p; else break;
        }
        while (split.size() < llama_max_devices()) split.push_back(0.0f);
        mp.tensor_split = split.data();
    }
    llama_model * model = llama_model_load_from_file(argv[2], mp);
    if (!model) {
        printf("PROBE error=load\n");
        return 1;
    }
    report_memory("loaded");

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) arg_long(argc, argv, "ctx", 4096);
    cp.n_batch = (uint32_t) arg_long(argc, argv, "batch", 2048);
    cp.n_ubatch = (uint32_t) arg_long(argc, argv, "ubatch", 512);
    cp.n_seq_max = (uint32_t) arg_long(argc, argv, "seqs", 1);
    const long fa = arg_long(argc, argv, "fa", -1);
    cp.flash_attn_type = fa < 0 ? LLAMA_FLASH_ATTN_TYPE_AUTO : (fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED);
    cp.type_k = (enum ggml_type) arg_long(argc, argv, "ctk", GGML_TYPE_F16);
    cp.type_v = (enum ggml_type) arg_long(argc, argv, "ctv", GGML_TYPE_F16);
    cp.kv_unified = arg_long(argc, argv, "unified", 0) != 0;
    cp.swa_full = arg_long(argc, argv, "swa_full", 0) != 0;
    cp.n_threads = cp.n_threads_batch = (int32_t) arg_long(argc, argv, "threads", 8);

    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        printf("PROBE error=context\n");
        llama_model_free(model);
        return 1;
    }
    report_memory("context");

    const long n_decode = arg_long(argc, argv, "decode", 0);
    if (n_decode > 0) {
        const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
        std::vector<llama_token> tokens((size_t) n_decode);
        for (long i = 0; i < n_decode; ++i) {
            tokens[(size_t) i] = (llama_token) (1 + (i * 7919) % (n_vocab - 1));
        }
        // a prompt of n_decode tokens (split into ubatches by llama_decode), then two generated tokens
        bool ok = true;
        for (size_t off = 0; ok && off < tokens.size(); off += cp.n_batch) {
            const size_t n = std::min((size_t) cp.n_batch, tokens.size() - off);
            ok = llama_decode(ctx, llama_batch_get_one(tokens.data() + off, (int32_t) n)) == 0;
        }
        if (!ok) {
            printf("PROBE error=decode\n");
        } else {
            for (int step = 0; step < 2; ++step) {
                llama_token t = 1 + step;
                if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) {
                    printf("PROBE error=decode1\n");
                    break;
                }
            }
        }
        llama_synchronize(ctx);
        report_memory("decoded");
    }
    printf("PROBE ok\n");
    fflush(stdout);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: llamacpp_probe quantize|run MODEL ...\n");
        return 2;
    }
    llama_backend_init();
    const int rc = strcmp(argv[1], "quantize") == 0 ? do_quantize(argc, argv) : do_run(argc, argv);
    llama_backend_free();
    return rc;
}
