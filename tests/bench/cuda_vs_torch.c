/* cuda_vs_torch: ftpipe's side of tests/bench/cuda_vs_torch.sh (the peer is
 * cuda_vs_torch.py). Built by `make gpu-tests` into build/gpu/.
 *
 *   cuda_vs_torch init SHAPE DIR                 a random bf16 model of a named shape
 *   cuda_vs_torch train DIR BATCH SEQ STEPS      LoRA training on the cuda backend
 *
 * train runs as the peer does: LoRA r=8, alpha=16, no dropout, all seven
 * projections, AdamW at lr 1e-4, random tokens, every position a target; two
 * warm-up steps, then STEPS timed ones. It prints one JSON line: tokens per
 * second, seconds per step, the backend's peak device memory (every allocation
 * and its scratch), the planned bytes, and the first and last loss. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/adamw.h"
#include "ftpipe/backend.h"
#include "ftpipe/error.h"
#include "ftpipe/fsutil.h"
#include "ftpipe/mem.h"
#include "ftpipe/model.h"
#include "ftpipe/model_init.h"
#include "ftpipe/random.h"

enum { WARMUP_STEPS = 2 };

static int init(const char *shape, const char *dir)
{
    ft_model_init_options options = {.dtype = FT_DTYPE_BF16, .seed = 0};
    if (ft_model_shape(shape, &options.config) < 0)
        return -1;
    return ft_model_init_write(dir, &options);
}

static int train(const char *dir, int batch_size, int seq_len, int steps)
{
    uint64_t started = ft_now_ns();
    ft_backend *gpu = ft_backend_cuda_create(0);
    if (!gpu)
        return -1;
    ft_model_options options = {batch_size, seq_len, FT_FINETUNE_LORA, true,
                                {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 0}};
    ft_model *model = NULL;
    ft_adamw *optimizer = NULL;
    int status = ft_model_load(dir, gpu, &options, &model);
    size_t count = 0;
    const ft_param_tensor *trainable = status == 0 ? ft_model_trainable(model, &count) : NULL;
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.0};
    if (status == 0)
        status = ft_adamw_create(gpu, trainable, count, &adamw, &optimizer);
    double load_seconds = (double)(ft_now_ns() - started) * 1e-9;

    int rows = batch_size * seq_len, vocab = status == 0 ? ft_model_get_config(model)->vocab_size : 1;
    int32_t *tokens = ft_xmalloc(rows * sizeof(int32_t)), *positions = ft_xmalloc(rows * sizeof(int32_t));
    int32_t *segments = ft_xcalloc(rows, sizeof(int32_t)), *targets = ft_xmalloc(rows * sizeof(int32_t));
    for (int i = 0; i < rows; i++) {
        tokens[i] = (int32_t)(ft_random_u64(7, i) % (uint64_t)vocab);
        positions[i] = i % seq_len;
    }
    for (int i = 0; i < rows; i++)
        targets[i] = i % seq_len == seq_len - 1 ? -100 : tokens[i + 1];
    ft_batch batch = {batch_size, seq_len, tokens, positions, segments, targets, 0, 0};
    double first_loss = 0.0, loss = 0.0;
    uint64_t timed_from = 0;
    for (int step = 0; step < WARMUP_STEPS + steps && status == 0; step++) {
        if (step == WARMUP_STEPS)
            timed_from = ft_now_ns();
        ft_model_zero_grads(model);
        status = ft_model_forward_backward(model, &batch, &loss);
        ft_adamw_step(optimizer, 1e-4);
        if (step == 0)
            first_loss = loss;
    }
    if (status == 0)
        status = gpu->check(gpu);
    if (status == 0) {
        double seconds = (double)(ft_now_ns() - timed_from) * 1e-9;
        printf("{\"tokens_per_second\": %.1f, \"step_seconds\": %.4f, \"peak_bytes\": %zu, \"planned_bytes\": %zu, "
               "\"load_seconds\": %.2f, \"loss_first\": %.4f, \"loss_last\": %.4f}\n",
               (double)rows * steps / seconds, seconds / steps, gpu->peak_bytes(gpu),
               ft_model_memory(model).total_bytes, load_seconds, first_loss, loss);
    }
    free(tokens);
    free(positions);
    free(segments);
    free(targets);
    ft_adamw_free(optimizer);
    ft_model_free(model);
    ft_backend_destroy(gpu);
    return status;
}

int main(int argc, char **argv)
{
    int status;
    if (argc == 4 && strcmp(argv[1], "init") == 0)
        status = init(argv[2], argv[3]);
    else if (argc == 6 && strcmp(argv[1], "train") == 0)
        status = train(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    else {
        fprintf(stderr, "usage: cuda_vs_torch init SHAPE DIR | train DIR BATCH SEQ STEPS\n");
        return 2;
    }
    if (status < 0)
        fprintf(stderr, "cuda_vs_torch: %s\n", ft_error_message());
    return status < 0 ? 1 : 0;
}
