/* matmul: products through cuBLASLt (bf16 inputs, fp32 accumulation, bias
 * fused as an epilogue), and linear layers with their LoRA adapter, forward and
 * backward. cuBLASLt is opened at run time; the algorithm for each shape is
 * looked up once and kept. A shape cuBLASLt has no algorithm for (odd widths or
 * alignments, as in tiny test models) runs on a plain kernel instead.
 *
 * LoRA's A and B are float; each product takes a bf16 copy (rank x features,
 * small next to the activations). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
}

/* --- opening cuBLASLt --- */

int ft_cublaslt_open(ft_cublaslt_api *api)
{
    char name[64];
    snprintf(name, sizeof name, "libcublasLt.so.%d", CUBLAS_VER_MAJOR);
    api->library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!api->library) {
        char fallback[128];
        snprintf(fallback, sizeof fallback, "/usr/local/cuda/lib64/%s", name);
        api->library = dlopen(fallback, RTLD_NOW | RTLD_LOCAL);
    }
    if (!api->library)
        return ft_error("cannot load %s (cuBLAS of CUDA %d): install CUDA's cuBLAS, or add the folder holding it "
                        "to LD_LIBRARY_PATH (%s)",
                        name, CUBLAS_VER_MAJOR, dlerror());
    struct {
        void **slot;
        const char *symbol;
    } functions[] = {
        {(void **)&api->create, "cublasLtCreate"},
        {(void **)&api->destroy, "cublasLtDestroy"},
        {(void **)&api->desc_create, "cublasLtMatmulDescCreate"},
        {(void **)&api->desc_destroy, "cublasLtMatmulDescDestroy"},
        {(void **)&api->desc_set, "cublasLtMatmulDescSetAttribute"},
        {(void **)&api->layout_create, "cublasLtMatrixLayoutCreate"},
        {(void **)&api->layout_destroy, "cublasLtMatrixLayoutDestroy"},
        {(void **)&api->preference_create, "cublasLtMatmulPreferenceCreate"},
        {(void **)&api->preference_destroy, "cublasLtMatmulPreferenceDestroy"},
        {(void **)&api->preference_set, "cublasLtMatmulPreferenceSetAttribute"},
        {(void **)&api->heuristic, "cublasLtMatmulAlgoGetHeuristic"},
        {(void **)&api->matmul, "cublasLtMatmul"},
        {(void **)&api->status_string, "cublasLtGetStatusString"},
    };
    for (size_t i = 0; i < sizeof functions / sizeof *functions; i++) {
        *functions[i].slot = dlsym(api->library, functions[i].symbol);
        if (!*functions[i].slot)
            return ft_error("%s lacks %s: install the cuBLAS of CUDA %d", name, functions[i].symbol,
                            CUBLAS_VER_MAJOR);
    }
    return 0;
}

void ft_cublaslt_close(ft_cublaslt_api *api)
{
    if (api->library)
        dlclose(api->library);
    api->library = NULL;
}

/* --- plans: the algorithm found for each shape --- */

struct gemm_key {
    bool trans_a, trans_b, bias, beta;
    int m, n, k, lda, ldb, ldc;
    cudaDataType_t c_type;
    uint32_t align_a, align_b, align_c, align_bias;
};

/* The descriptors of one product in cuBLASLt's column-major terms: a row-major
 * C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so cuBLASLt's
 * first operand is our B. */
struct lt_product {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t first, second, out;
};

/* What a shape needs, made once: its descriptors (the bias pointer, which
 * differs between layers of one shape, is set on each call) and algorithm. */
struct gemm_plan {
    gemm_key key;
    uint64_t key_hash;           /* compared before the key */
    lt_product product;
    bool described;              /* the descriptors were made */
    bool found;                  /* false: cuBLASLt has none; the plain kernel runs */
    cublasLtMatmulAlgo_t algo;
};

enum { plan_capacity = 256 };

struct ft_gemm_plan_cache {
    gemm_plan plans[plan_capacity];
    int count;
    int next;                    /* replaced next when full */
};

static void release(ft_cuda_context *context, lt_product *p);

void ft_gemm_plan_cache_free(ft_cuda_context *context)
{
    ft_gemm_plan_cache *cache = context->plans;
    if (!cache)
        return;
    for (int i = 0; i < cache->count; i++)
        release(context, &cache->plans[i].product);
    free(cache);
    context->plans = NULL;
}

/* FNV-1a over the key's bytes (zeroed padding included). */
static uint64_t hash_of(const gemm_key *key)
{
    const unsigned char *bytes = (const unsigned char *)key;
    uint64_t hash = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *key; i++)
        hash = (hash ^ bytes[i]) * 1099511628211ull;
    return hash;
}

/* The largest power of two (up to 256) the address is a multiple of. */
static uint32_t alignment_of(const void *pointer)
{
    uintptr_t address = (uintptr_t)pointer;
    uint32_t alignment = 256;
    while (alignment > 1 && address % alignment)
        alignment /= 2;
    return alignment;
}

static gemm_key key_of(const ft_gemm *g)
{
    gemm_key key;
    memset(&key, 0, sizeof key); /* compared with memcmp: no stray padding */
    key.trans_a = g->trans_a;
    key.trans_b = g->trans_b;
    key.bias = g->bias != NULL;
    key.beta = g->beta != 0.0f;
    key.m = g->m;
    key.n = g->n;
    key.k = g->k;
    key.lda = g->lda;
    key.ldb = g->ldb;
    key.ldc = g->ldc;
    key.c_type = g->c_type;
    key.align_a = alignment_of(g->a);
    key.align_b = alignment_of(g->b);
    key.align_c = alignment_of(g->c);
    key.align_bias = g->bias ? alignment_of(g->bias) : 0;
    return key;
}

static bool describe(ft_cuda_context *context, const ft_gemm *g, lt_product *p)
{
    const ft_cublaslt_api *api = &context->cublaslt;
    memset(p, 0, sizeof *p);
    cublasOperation_t first_op = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t second_op = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    bool ok = api->desc_create(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              api->desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &first_op, sizeof first_op) ==
                  CUBLAS_STATUS_SUCCESS &&
              api->desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &second_op, sizeof second_op) ==
                  CUBLAS_STATUS_SUCCESS;
    if (ok && g->bias) {
        cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
        ok = api->desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue) ==
                 CUBLAS_STATUS_SUCCESS &&
             api->desc_set(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias) ==
                 CUBLAS_STATUS_SUCCESS;
    }
    ok = ok &&
         api->layout_create(&p->first, CUDA_R_16BF, g->trans_b ? g->k : g->n, g->trans_b ? g->n : g->k, g->ldb) ==
             CUBLAS_STATUS_SUCCESS &&
         api->layout_create(&p->second, CUDA_R_16BF, g->trans_a ? g->m : g->k, g->trans_a ? g->k : g->m, g->lda) ==
             CUBLAS_STATUS_SUCCESS &&
         api->layout_create(&p->out, g->c_type, g->n, g->m, g->ldc) == CUBLAS_STATUS_SUCCESS;
    return ok;
}

static void release(ft_cuda_context *context, lt_product *p)
{
    const ft_cublaslt_api *api = &context->cublaslt;
    if (p->out)
        api->layout_destroy(p->out);
    if (p->second)
        api->layout_destroy(p->second);
    if (p->first)
        api->layout_destroy(p->first);
    if (p->desc)
        api->desc_destroy(p->desc);
    memset(p, 0, sizeof *p);
}

static void find_algorithm(ft_cuda_context *context, const ft_gemm *g, const gemm_key *key, lt_product *p,
                           gemm_plan *plan)
{
    const ft_cublaslt_api *api = &context->cublaslt;
    cublasLtMatmulPreference_t preference = NULL;
    uint64_t workspace = context->scratch.gemm_workspace_bytes;
    cublasLtMatmulHeuristicResult_t result;
    int returned = 0;
    /* split-K only with a separate reduction, never added in place into the output
     * (in any order the blocks finish): the same product gives the same bits */
    uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
    plan->found = api->preference_create(&preference) == CUBLAS_STATUS_SUCCESS &&
                  api->preference_set(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                      sizeof workspace) == CUBLAS_STATUS_SUCCESS &&
                  api->preference_set(preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions,
                                      sizeof reductions) == CUBLAS_STATUS_SUCCESS &&
                  api->preference_set(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key->align_b,
                                      sizeof key->align_b) == CUBLAS_STATUS_SUCCESS &&
                  api->preference_set(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key->align_a,
                                      sizeof key->align_a) == CUBLAS_STATUS_SUCCESS &&
                  api->preference_set(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key->align_c,
                                      sizeof key->align_c) == CUBLAS_STATUS_SUCCESS &&
                  api->preference_set(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key->align_c,
                                      sizeof key->align_c) == CUBLAS_STATUS_SUCCESS &&
                  api->heuristic(context->lt, p->desc, p->first, p->second, p->out, p->out, preference, 1, &result,
                                 &returned) == CUBLAS_STATUS_SUCCESS &&
                  returned > 0;
    if (plan->found)
        plan->algo = result.algo;
    if (preference)
        api->preference_destroy(preference);
}

static gemm_plan *plan_for(ft_cuda_context *context, const gemm_key *key, uint64_t hash)
{
    if (!context->plans)
        context->plans = (ft_gemm_plan_cache *)ft_xcalloc(1, sizeof *context->plans);
    ft_gemm_plan_cache *cache = context->plans;
    for (int i = 0; i < cache->count; i++)
        if (cache->plans[i].key_hash == hash && memcmp(&cache->plans[i].key, key, sizeof *key) == 0)
            return &cache->plans[i];
    return NULL;
}

/* A plan for a shape not seen yet: its descriptors and algorithm. When the cache
 * is full the oldest plan's place (and descriptors) are taken. */
static gemm_plan *new_plan(ft_cuda_context *context, const ft_gemm *g, const gemm_key *key, uint64_t hash)
{
    ft_gemm_plan_cache *cache = context->plans;
    int slot = cache->count < plan_capacity ? cache->count++ : cache->next++ % plan_capacity;
    gemm_plan *plan = &cache->plans[slot];
    release(context, &plan->product);
    plan->key = *key;
    plan->key_hash = hash;
    plan->described = describe(context, g, &plan->product);
    plan->found = false;
    if (plan->described)
        find_algorithm(context, g, key, &plan->product, plan);
    return plan;
}

/* The plain product: one thread per element of C, fp32 accumulation. */
template <typename Out>
__global__ void plain_gemm_kernel(ft_gemm g)
{
    int column = blockIdx.x * blockDim.x + threadIdx.x, row = blockIdx.y * blockDim.y + threadIdx.y;
    if (row >= g.m || column >= g.n)
        return;
    const bf16 *a = (const bf16 *)g.a, *b = (const bf16 *)g.b;
    float sum = 0.0f;
    for (int i = 0; i < g.k; i++) {
        float x = __bfloat162float(g.trans_a ? a[(size_t)i * g.lda + row] : a[(size_t)row * g.lda + i]);
        float y = __bfloat162float(g.trans_b ? b[(size_t)column * g.ldb + i] : b[(size_t)i * g.ldb + column]);
        sum += x * y;
    }
    Out *c = (Out *)g.c + (size_t)row * g.ldc + column;
    float value = g.alpha * sum;
    if (g.beta != 0.0f)
        value += g.beta * (float)*c;
    if (g.bias)
        value += __bfloat162float(g.bias[column]);
    *c = (Out)value;
}

void ft_cuda_gemm(ft_cuda_context *context, const ft_gemm *g)
{
    if (g->m == 0 || g->n == 0)
        return;
    gemm_key key = key_of(g);
    uint64_t hash = hash_of(&key);
    gemm_plan *plan = plan_for(context, &key, hash);
    if (!plan)
        plan = new_plan(context, g, &key, hash);
    if (plan->found && g->bias)
        CUBLAS_CHECK(context, context->cublaslt.desc_set(plan->product.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                         &g->bias, sizeof g->bias));
    if (plan->found) {
        const lt_product *p = &plan->product;
        CUBLAS_CHECK(context, context->cublaslt.matmul(context->lt, p->desc, &g->alpha, g->b, p->first, g->a,
                                                       p->second, &g->beta, g->c, p->out, g->c, p->out,
                                                       &plan->algo, context->scratch.gemm_workspace,
                                                       context->scratch.gemm_workspace_bytes, context->stream));
    } else {
        dim3 threads(16, 16), blocks((g->n + 15) / 16, (g->m + 15) / 16);
        if (g->c_type == CUDA_R_32F)
            plain_gemm_kernel<float><<<blocks, threads, 0, context->stream>>>(*g);
        else
            plain_gemm_kernel<bf16><<<blocks, threads, 0, context->stream>>>(*g);
        LAUNCH_CHECK(context, "plain_gemm_kernel");
    }
}

/* --- LoRA's helpers --- */

__global__ void to_bf16_kernel(bf16 *out, const float *in, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(in[i]);
}

/* out = dropout(x): element i dropped when its uniform draw is below p, kept ones scaled by 1/(1-p). */
__global__ void dropout_kernel(bf16 *out, const bf16 *x, size_t n, uint64_t seed, float p, float keep_scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = ft_random_uniform(seed, i) < p ? __float2bfloat16(0.0f)
                                                         : __float2bfloat16(__bfloat162float(x[i]) * keep_scale);
}

/* grad_x += the gradient through the dropout of `through` (zero where dropped). */
__global__ void dropout_backward_kernel(bf16 *grad_x, const bf16 *through, size_t n, uint64_t seed, float p,
                                        float keep_scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (ft_random_uniform(seed, i) >= p)
            grad_x[i] = __float2bfloat16(__bfloat162float(grad_x[i]) + __bfloat162float(through[i]) * keep_scale);
}

/* grad_bias[c] += sum over rows of grad_out[r][c] */
__global__ void bias_grad_kernel(float *grad_bias, const bf16 *grad_out, int rows, int columns)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= columns)
        return;
    float sum = 0.0f;
    for (int r = 0; r < rows; r++)
        sum += __bfloat162float(grad_out[(size_t)r * columns + c]);
    grad_bias[c] += sum;
}

void ft_cuda_to_bf16(ft_cuda_context *context, bf16 *out, const float *in, size_t n)
{
    to_bf16_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(out, in, n);
    LAUNCH_CHECK(context, "to_bf16_kernel");
}

/* The input the adapter sees: x itself, or its dropped-out copy in scratch. */
static const bf16 *adapter_input(ft_cuda_context *context, const ft_lora_op *lora, const void *x, size_t n)
{
    if (lora->dropout <= 0.0f)
        return (const bf16 *)x;
    bf16 *dropped = context->scratch.lora_dropped;
    dropout_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
        dropped, (const bf16 *)x, n, lora->dropout_seed, lora->dropout, 1.0f / (1.0f - lora->dropout));
    LAUNCH_CHECK(context, "dropout_kernel");
    return dropped;
}

/* C[m, n] = alpha op(A) op(B) + beta C, all bf16 but C's type */
static ft_gemm product(bool trans_a, bool trans_b, int m, int n, int k, const void *a, int lda, const void *b,
                       int ldb, void *c, int ldc, cudaDataType_t c_type, float alpha, float beta)
{
    ft_gemm g;
    g.trans_a = trans_a;
    g.trans_b = trans_b;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = a;
    g.lda = lda;
    g.b = b;
    g.ldb = ldb;
    g.c = c;
    g.ldc = ldc;
    g.c_type = c_type;
    g.alpha = alpha;
    g.beta = beta;
    g.bias = NULL;
    return g;
}

/* --- linear layers --- */

void ft_cuda_linear_forward(ft_backend *self, void *out, const void *x, const void *weight, const void *bias,
                            const ft_lora_op *lora, int rows, int in_features, int out_features)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    /* out = x W^T + bias */
    ft_gemm g = product(false, true, rows, out_features, in_features, x, in_features, weight, in_features, out,
                        out_features, CUDA_R_16BF, 1.0f, 0.0f);
    g.bias = (const bf16 *)bias;
    ft_cuda_gemm(context, &g);
    if (!lora)
        return;
    int rank = lora->rank;
    bf16 *a = context->scratch.lora_a, *b = context->scratch.lora_b;
    ft_cuda_to_bf16(context, a, lora->a, (size_t)rank * in_features);
    ft_cuda_to_bf16(context, b, lora->b, (size_t)out_features * rank);
    const bf16 *input = adapter_input(context, lora, x, (size_t)rows * in_features);
    /* xa = dropout(x) A^T;  out += scaling xa B^T */
    g = product(false, true, rows, rank, in_features, input, in_features, a, in_features, lora->xa, rank,
                CUDA_R_16BF, 1.0f, 0.0f);
    ft_cuda_gemm(context, &g);
    g = product(false, true, rows, out_features, rank, lora->xa, rank, b, rank, out, out_features, CUDA_R_16BF,
                lora->scaling, 1.0f);
    ft_cuda_gemm(context, &g);
}

static void lora_backward(ft_cuda_context *context, void *grad_x, const void *grad_out, const void *x,
                          const ft_lora_op *lora, int rows, int in_features, int out_features)
{
    int rank = lora->rank;
    float s = lora->scaling;
    bf16 *a = context->scratch.lora_a, *b = context->scratch.lora_b, *grad_xa = context->scratch.lora_grad_xa;
    ft_cuda_to_bf16(context, a, lora->a, (size_t)rank * in_features);
    ft_cuda_to_bf16(context, b, lora->b, (size_t)out_features * rank);
    /* grad_xa = grad_out B (the scaling applied below) */
    ft_gemm g = product(false, false, rows, rank, out_features, grad_out, out_features, b, rank, grad_xa, rank,
                        CUDA_R_16BF, 1.0f, 0.0f);
    ft_cuda_gemm(context, &g);
    if (lora->grad_b) { /* grad_B += s grad_out^T xa */
        g = product(true, false, out_features, rank, rows, grad_out, out_features, lora->xa, rank, lora->grad_b, rank,
                    CUDA_R_32F, s, 1.0f);
        ft_cuda_gemm(context, &g);
    }
    size_t n = (size_t)rows * in_features;
    if (lora->grad_a) { /* grad_A += s grad_xa^T dropout(x) */
        const bf16 *input = adapter_input(context, lora, x, n);
        g = product(true, false, rank, in_features, rows, grad_xa, rank, input, in_features, lora->grad_a,
                    in_features, CUDA_R_32F, s, 1.0f);
        ft_cuda_gemm(context, &g);
    }
    if (lora->dropout <= 0.0f) { /* grad_x += s grad_xa A */
        g = product(false, false, rows, in_features, rank, grad_xa, rank, a, in_features, grad_x, in_features,
                    CUDA_R_16BF, s, 1.0f);
        ft_cuda_gemm(context, &g);
        return;
    }
    bf16 *through = context->scratch.lora_dropped;
    g = product(false, false, rows, in_features, rank, grad_xa, rank, a, in_features, through, in_features,
                CUDA_R_16BF, s, 0.0f);
    ft_cuda_gemm(context, &g);
    dropout_backward_kernel<<<ft_cuda_grid(n), FT_CUDA_THREADS, 0, context->stream>>>(
        (bf16 *)grad_x, through, n, lora->dropout_seed, lora->dropout, 1.0f / (1.0f - lora->dropout));
    LAUNCH_CHECK(context, "dropout_backward_kernel");
}

void ft_cuda_linear_backward(ft_backend *self, void *grad_x, bool accumulate, float *grad_weight, float *grad_bias,
                             const void *grad_out, const void *x, const void *weight, const ft_lora_op *lora,
                             int rows, int in_features, int out_features)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    /* grad_x (+)= grad_out W */
    ft_gemm g = product(false, false, rows, in_features, out_features, grad_out, out_features, weight, in_features,
                        grad_x, in_features, CUDA_R_16BF, 1.0f, accumulate ? 1.0f : 0.0f);
    ft_cuda_gemm(context, &g);
    if (grad_weight) { /* grad_W += grad_out^T x */
        g = product(true, false, out_features, in_features, rows, grad_out, out_features, x, in_features,
                    grad_weight, in_features, CUDA_R_32F, 1.0f, 1.0f);
        ft_cuda_gemm(context, &g);
    }
    if (grad_bias) {
        bias_grad_kernel<<<(out_features + FT_CUDA_THREADS - 1) / FT_CUDA_THREADS, FT_CUDA_THREADS, 0,
                           context->stream>>>(grad_bias, (const bf16 *)grad_out, rows, out_features);
        LAUNCH_CHECK(context, "bias_grad_kernel");
    }
    if (lora)
        lora_backward(context, grad_x, grad_out, x, lora, rows, in_features, out_features);
}
