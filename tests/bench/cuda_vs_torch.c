/* cuda_vs_torch: ftpipe's side of tests/bench/cuda_vs_torch.sh (the peer is
 * cuda_vs_torch.py). Built by `make gpu-tests` into build/gpu/.
 *
 *   cuda_vs_torch init SHAPE DIR                          a random bf16 model of a named shape
 *   cuda_vs_torch train DIR BATCH SEQ STEPS [--recompute]  LoRA training on the cuda backend
 *   cuda_vs_torch load DIR                                 loading the weights onto the GPU
 *   cuda_vs_torch generate DIR BATCH PROMPT NEW            greedy generation with the KV cache
 *
 * train runs as the peer does: LoRA r=8, alpha=16, no dropout, all seven
 * projections, AdamW at lr 1e-4, random tokens, every position a target; two
 * warm-up steps, then STEPS timed ones; --recompute turns on gradient
 * checkpointing. It prints one JSON line: tokens per second, seconds per step,
 * the backend's peak device memory (every allocation and its scratch), the
 * planned bytes, and the first and last loss.
 *
 * load times ft_model_load (for inference) once the GPU is started, until the
 * weights are on it; generate times BATCH random prompts of PROMPT tokens and
 * exactly NEW new ones each (no stop tokens), after a short warm-up run. Each
 * prints one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/model_init.h"

enum { WARMUP_STEPS = 2 };

static int init(const char *shape, const char *dir)
{
    ft_model_init_options options = {.dtype = FT_DTYPE_BF16, .seed = 0};
    if (ft_model_shape(shape, &options.config) < 0)
        return -1;
    return ft_model_init_write(dir, &options);
}

static int train(const char *dir, int batch_size, int seq_len, int steps, bool recompute)
{
    uint64_t started = ft_now_ns();
    ft_backend *gpu = ft_backend_cuda_create(0);
    if (!gpu)
        return -1;
    ft_model_options options = {batch_size, seq_len, FT_FINETUNE_LORA, true,
                                {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 0}, recompute, false, false, 0, 0, false};
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

static int load(const char *dir)
{
    ft_backend *gpu = ft_backend_cuda_create(0);
    if (!gpu)
        return -1;
    ft_model_options options = {1, 64, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    uint64_t started = ft_now_ns();
    int status = ft_model_load(dir, gpu, &options, &model);
    if (status == 0)
        status = gpu->check(gpu);
    double seconds = (double)(ft_now_ns() - started) * 1e-9;
    if (status == 0) {
        size_t bytes = ft_model_memory(model).parameter_bytes;
        printf("{\"load_seconds\": %.3f, \"weight_bytes\": %zu, \"gb_per_second\": %.2f}\n", seconds, bytes,
               (double)bytes / seconds * 1e-9);
    }
    ft_model_free(model);
    ft_backend_destroy(gpu);
    return status;
}

/* One call of ft_generate over batch random prompts; its seconds, or -1. */
static double generate_once(ft_generator *generator, int32_t *const *prompts, const int *lengths, int batch,
                            int new_tokens, int32_t *output, int *output_lengths)
{
    ft_generate_options options = {.max_new_tokens = new_tokens, .temperature = 0.0, .top_p = 1.0};
    uint64_t started = ft_now_ns();
    if (ft_generate(generator, (const int32_t *const *)prompts, lengths, batch, &options, output, output_lengths) < 0)
        return -1.0;
    return (double)(ft_now_ns() - started) * 1e-9;
}

static int generate(const char *dir, int batch, int prompt, int new_tokens)
{
    ft_backend *gpu = ft_backend_cuda_create(0);
    if (!gpu)
        return -1;
    ft_model_options options = {batch, prompt + new_tokens, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    ft_generator *generator = NULL;
    int status = ft_model_load(dir, gpu, &options, &model);
    if (status == 0)
        status = ft_generator_create(model, batch, prompt + new_tokens, &generator);
    int vocab = status == 0 ? ft_model_get_config(model)->vocab_size : 1;
    int32_t **prompts = ft_xcalloc(batch, sizeof *prompts), *output = ft_xmalloc((size_t)batch * new_tokens * 4);
    int *lengths = ft_xmalloc(batch * sizeof(int)), *output_lengths = ft_xmalloc(batch * sizeof(int));
    for (int b = 0; b < batch; b++) {
        prompts[b] = ft_xmalloc(prompt * sizeof(int32_t));
        lengths[b] = prompt;
        for (int t = 0; t < prompt; t++)
            prompts[b][t] = (int32_t)(ft_random_u64(11, (uint64_t)b * prompt + t) % (uint64_t)vocab);
    }
    double seconds = -1.0;
    if (status == 0 && generate_once(generator, prompts, lengths, batch, 8, output, output_lengths) >= 0)
        seconds = generate_once(generator, prompts, lengths, batch, new_tokens, output, output_lengths);
    if (status == 0 && seconds < 0)
        status = -1;
    long generated = 0;
    for (int b = 0; b < batch && status == 0; b++)
        generated += output_lengths[b];
    if (status == 0)
        printf("{\"tokens_per_second\": %.1f, \"seconds\": %.3f, \"generated\": %ld, \"peak_bytes\": %zu}\n",
               (double)generated / seconds, seconds, generated, gpu->peak_bytes(gpu));
    for (int b = 0; b < batch; b++)
        free(prompts[b]);
    free(prompts);
    free(output);
    free(lengths);
    free(output_lengths);
    ft_generator_free(generator);
    ft_model_free(model);
    ft_backend_destroy(gpu);
    return status;
}

int main(int argc, char **argv)
{
    int status;
    if (argc == 4 && strcmp(argv[1], "init") == 0)
        status = init(argv[2], argv[3]);
    else if ((argc == 6 || (argc == 7 && strcmp(argv[6], "--recompute") == 0)) && strcmp(argv[1], "train") == 0)
        status = train(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argc == 7);
    else if (argc == 3 && strcmp(argv[1], "load") == 0)
        status = load(argv[2]);
    else if (argc == 6 && strcmp(argv[1], "generate") == 0)
        status = generate(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    else {
        fprintf(stderr, "usage: cuda_vs_torch init SHAPE DIR | train DIR BATCH SEQ STEPS [--recompute] | load DIR | "
                        "generate DIR BATCH PROMPT NEW\n");
        return 2;
    }
    if (status < 0)
        fprintf(stderr, "cuda_vs_torch: %s\n", ft_error_message());
    return status < 0 ? 1 : 0;
}
