/* cpu_decode: the ops generation with a KV cache adds to the cpu backend:
 * moving rows in and out of the cache, and one new query per sequence
 * attending to its cached keys and values.
 *
 * attention_decode takes its scores in the attention scratch, one row of at
 * most max_seq_len, well inside what reserve() sized for attention_forward. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

void ft_cpu_gather_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width)
{
    size_t row_bytes = (size_t)width * sizeof(float);
    for (int r = 0; r < rows; r++)
        memcpy((char *)dst + (size_t)r * row_bytes, (const char *)src + (size_t)index[r] * row_bytes, row_bytes);
}

void ft_cpu_scatter_rows(ft_backend *self, void *dst, const void *src, const int32_t *index, int rows, int width)
{
    size_t row_bytes = (size_t)width * sizeof(float);
    for (int r = 0; r < rows; r++)
        memcpy((char *)dst + (size_t)index[r] * row_bytes, (const char *)src + (size_t)r * row_bytes, row_bytes);
}

void ft_cpu_argmax_rows(ft_backend *self, int32_t *out, const void *x, int rows, int width)
{
    for (int r = 0; r < rows; r++) {
        const float *row = (const float *)x + (size_t)r * width;
        int32_t best = 0;
        for (int32_t i = 1; i < width; i++)
            best = row[i] > row[best] ? i : best;
        out[r] = best;
    }
}

/* The softmax as attention_forward takes it (max, a double sum, exp(s - logsumexp)),
 * so that a decode step gives what a full pass gives at its last token. */
static void softmax(float *scores, int n)
{
    float max = scores[0];
    for (int j = 1; j < n; j++)
        max = scores[j] > max ? scores[j] : max;
    double sum = 0.0;
    for (int j = 0; j < n; j++)
        sum += exp((double)(scores[j] - max));
    float lse = max + (float)log(sum);
    for (int j = 0; j < n; j++)
        scores[j] = expf(scores[j] - lse);
}

void ft_cpu_attention_decode(ft_backend *self, void *out_memory, const void *q_memory, const void *k_memory,
                             const void *v_memory, const int32_t *lengths, int batch, int max_len, int n_heads,
                             int n_kv_heads, int head_dim)
{
    float *out = out_memory;
    const float *q = q_memory, *k_cache = k_memory, *v_cache = v_memory;
    int group = n_heads / n_kv_heads, q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    float *scores = ft_cpu_scratch(self, (size_t)max_len);
    for (int b = 0; b < batch; b++) {
        int n = lengths[b];
        for (int h = 0; h < n_heads; h++) {
            size_t kv_offset = (size_t)b * max_len * kv_stride + (size_t)(h / group) * head_dim;
            const float *q_head = q + (size_t)b * q_stride + (size_t)h * head_dim;
            float *out_head = out + (size_t)b * q_stride + (size_t)h * head_dim;
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, head_dim, scale, k_cache + kv_offset, kv_stride, q_head, 1,
                        0.0f, scores, 1);
            softmax(scores, n);
            cblas_sgemv(CblasRowMajor, CblasTrans, n, head_dim, 1.0f, v_cache + kv_offset, kv_stride, scores, 1,
                        0.0f, out_head, 1);
        }
    }
}
