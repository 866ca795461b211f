/* cpu_attention: causal softmax attention with grouped key/value heads and
 * packed-sample segments, forward and backward, on the cpu backend; and the
 * vision towers' bidirectional attention within each run of a segment,
 * forward only.
 *
 * Per (row, head) the scores are one sgemm into a [seq_len, seq_len] scratch;
 * only the logsumexp of each query is kept for backward, which recomputes the
 * probabilities, so activation memory stays linear in seq_len. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

size_t ft_cpu_attention_scratch_floats(const ft_backend_limits *limits)
{
    return 2 * (size_t)limits->max_seq_len * (size_t)limits->max_seq_len; /* probabilities, their gradient */
}

typedef struct {
    int seq_len;
    int head_dim;
    int q_stride;   /* floats between tokens in q and out */
    int kv_stride;  /* ... in k and v */
    float scale;
} head_view;

static head_view view_of(const ft_attention_shape *shape)
{
    return (head_view){shape->seq_len, shape->head_dim, shape->n_heads * shape->head_dim,
                       shape->n_kv_heads * shape->head_dim, 1.0f / sqrtf((float)shape->head_dim)};
}

static inline bool visible(const int32_t *segments, int i, int j)
{
    return j <= i && segments[j] == segments[i];
}

/* probabilities[i][j] = exp(scale q_i.k_j - logsumexp_i) where token i sees j, else 0. */
static void probabilities(float *p, const float *q, const float *k, const float *logsumexp,
                          const int32_t *segments, const head_view *view)
{
    int n = view->seq_len;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, view->head_dim, view->scale, q, view->q_stride, k,
                view->kv_stride, 0.0f, p, n);
    for (int i = 0; i < n; i++) {
        float *row = p + (size_t)i * n;
        for (int j = 0; j < n; j++)
            row[j] = visible(segments, i, j) ? expf(row[j] - logsumexp[i]) : 0.0f;
    }
}

/* Softmax of each query's visible scores in place; writes the logsumexps. */
static void softmax_rows(float *p, float *logsumexp, const int32_t *segments, int n)
{
    for (int i = 0; i < n; i++) {
        float *row = p + (size_t)i * n;
        float max = row[i]; /* a token always sees itself */
        for (int j = 0; j < i; j++)
            if (visible(segments, i, j) && row[j] > max)
                max = row[j];
        double sum = 0.0;
        for (int j = 0; j <= i; j++)
            if (visible(segments, i, j))
                sum += exp((double)(row[j] - max));
        float lse = max + (float)log(sum);
        if (logsumexp)
            logsumexp[i] = lse;
        for (int j = 0; j < n; j++)
            row[j] = visible(segments, i, j) ? expf(row[j] - lse) : 0.0f;
    }
}

/* Queries of a segment's run go through bidirectional attention this many at a
 * time, so that the scores take QUERY_BLOCK rows of the run, not its square. */
#define QUERY_BLOCK 256

/* Every token attends to every token of its run of equal segment ids. */
static void bidirectional_forward(ft_backend *self, float *out, float *logsumexp, const float *q, const float *k,
                                  const float *v, const int32_t *segments, const ft_attention_shape *shape)
{
    head_view view = view_of(shape);
    int n = shape->seq_len, group = shape->n_heads / shape->n_kv_heads;
    for (int b = 0; b < shape->batch_size; b++) {
        const int32_t *row_segments = segments + (size_t)b * n;
        for (int start = 0, end; start < n; start = end) {
            for (end = start + 1; end < n && row_segments[end] == row_segments[start]; end++)
                ;
            int length = end - start;
            size_t first = (size_t)b * n + start;
            float *p = ft_cpu_scratch(self, (size_t)(length < QUERY_BLOCK ? length : QUERY_BLOCK) * length);
            for (int h = 0; h < shape->n_heads; h++) {
                size_t kv_offset = first * view.kv_stride + (size_t)(h / group) * view.head_dim;
                for (int block = 0; block < length; block += QUERY_BLOCK) {
                    int rows = length - block < QUERY_BLOCK ? length - block : QUERY_BLOCK;
                    size_t q_offset = (first + block) * view.q_stride + (size_t)h * view.head_dim;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, length, view.head_dim, view.scale,
                                q + q_offset, view.q_stride, k + kv_offset, view.kv_stride, 0.0f, p, length);
                    for (int i = 0; i < rows; i++) {
                        float *row = p + (size_t)i * length, max = row[0];
                        for (int j = 1; j < length; j++)
                            max = row[j] > max ? row[j] : max;
                        double sum = 0.0;
                        for (int j = 0; j < length; j++)
                            sum += exp((double)(row[j] - max));
                        float lse = max + (float)log(sum);
                        if (logsumexp)
                            logsumexp[((size_t)b * shape->n_heads + h) * n + start + block + i] = lse;
                        for (int j = 0; j < length; j++)
                            row[j] = expf(row[j] - lse);
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, view.head_dim, length, 1.0f, p,
                                length, v + kv_offset, view.kv_stride, 0.0f, out + q_offset, view.q_stride);
                }
            }
        }
    }
}

void ft_cpu_attention_forward(ft_backend *self, void *out_memory, float *logsumexp, const void *q_memory,
                              const void *k_memory, const void *v_memory, const int32_t *segments,
                              const ft_attention_shape *shape)
{
    float *out = out_memory;
    const float *q = q_memory, *k = k_memory, *v = v_memory;
    if (shape->bidirectional) {
        bidirectional_forward(self, out, logsumexp, q, k, v, segments, shape);
        return;
    }
    head_view view = view_of(shape);
    int n = shape->seq_len, group = shape->n_heads / shape->n_kv_heads;
    float *p = ft_cpu_scratch(self, (size_t)n * n);
    for (int b = 0; b < shape->batch_size; b++) {
        size_t first = (size_t)b * n;
        for (int h = 0; h < shape->n_heads; h++) {
            const float *q_head = q + first * view.q_stride + (size_t)h * view.head_dim;
            size_t kv_offset = first * view.kv_stride + (size_t)(h / group) * view.head_dim;
            float *lse = logsumexp ? logsumexp + ((size_t)b * shape->n_heads + h) * n : NULL;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, view.head_dim, view.scale, q_head,
                        view.q_stride, k + kv_offset, view.kv_stride, 0.0f, p, n);
            softmax_rows(p, lse, segments + first, n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, view.head_dim, n, 1.0f, p, n, v + kv_offset,
                        view.kv_stride, 0.0f, out + first * view.q_stride + (size_t)h * view.head_dim,
                        view.q_stride);
        }
    }
}

/* Takes the softmax's row sums straight from P and dP, so forward's out is not read. */
void ft_cpu_attention_backward(ft_backend *self, void *grad_q_memory, void *grad_k_memory, void *grad_v_memory,
                               const void *grad_out_memory, const void *out, const void *q_memory,
                               const void *k_memory, const void *v_memory, const float *logsumexp,
                               const int32_t *segments, const ft_attention_shape *shape)
{
    float *grad_q = grad_q_memory, *grad_k = grad_k_memory, *grad_v = grad_v_memory;
    const float *grad_out = grad_out_memory, *q = q_memory, *k = k_memory, *v = v_memory;
    head_view view = view_of(shape);
    int n = shape->seq_len, group = shape->n_heads / shape->n_kv_heads;
    size_t kv_floats = (size_t)shape->batch_size * n * view.kv_stride;
    memset(grad_k, 0, kv_floats * sizeof(float)); /* heads of a group add into them */
    memset(grad_v, 0, kv_floats * sizeof(float));
    float *p = ft_cpu_scratch(self, 2 * (size_t)n * n);
    float *grad_scores = p + (size_t)n * n;
    for (int b = 0; b < shape->batch_size; b++) {
        size_t first = (size_t)b * n;
        for (int h = 0; h < shape->n_heads; h++) {
            size_t q_offset = first * view.q_stride + (size_t)h * view.head_dim;
            size_t kv_offset = first * view.kv_stride + (size_t)(h / group) * view.head_dim;
            const float *lse = logsumexp + ((size_t)b * shape->n_heads + h) * n;
            probabilities(p, q + q_offset, k + kv_offset, lse, segments + first, &view);
            /* grad_v += P^T dO;  dP = dO V^T */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, view.head_dim, n, 1.0f, p, n,
                        grad_out + q_offset, view.q_stride, 1.0f, grad_v + kv_offset, view.kv_stride);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, view.head_dim, 1.0f, grad_out + q_offset,
                        view.q_stride, v + kv_offset, view.kv_stride, 0.0f, grad_scores, n);
            /* through the softmax: dS = P (dP - sum_j P dP) */
            for (int i = 0; i < n; i++) {
                float *dp = grad_scores + (size_t)i * n;
                const float *pi = p + (size_t)i * n;
                double dot = 0.0;
                for (int j = 0; j <= i; j++)
                    dot += (double)pi[j] * dp[j];
                for (int j = 0; j < n; j++)
                    dp[j] = pi[j] * (dp[j] - (float)dot);
            }
            /* grad_q = scale dS K;  grad_k += scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, view.head_dim, n, view.scale, grad_scores, n,
                        k + kv_offset, view.kv_stride, 0.0f, grad_q + q_offset, view.q_stride);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, view.head_dim, n, view.scale, grad_scores, n,
                        q + q_offset, view.q_stride, 1.0f, grad_k + kv_offset, view.kv_stride);
        }
    }
}
