/* ftpipe_logits: ftpipe's side of tests/bench/peft_check.sh. Built by
 * `make gpu-tests` into build/gpu/ (or alone: make build/gpu/ftpipe_logits).
 *
 *   ftpipe_logits MODEL_DIR ADAPTER_DIR|- OUT TOKEN...
 *
 * Runs the model (with the peft adapter unless "-") on the cpu backend in f32
 * over one row of the given token ids and writes the logits to OUT as raw
 * little-endian float32, [tokens, vocab_size]. */
#include <stdio.h>
#include <stdlib.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/model.h"

static int write_logits(const char *model_dir, const char *adapter_dir, const char *out_path, int n,
                        char **token_args)
{
    ft_model_options options = {1, n, FT_FINETUNE_NONE, adapter_dir != NULL, {0}, false, false, false, 0, 0, false};
    if (adapter_dir && ft_lora_config_load(adapter_dir, &options.lora) < 0)
        return -1;
    ft_backend *cpu = ft_backend_cpu_create(0);
    ft_model *model = NULL;
    int status = ft_model_load(model_dir, cpu, &options, &model);
    if (status == 0 && adapter_dir)
        status = ft_lora_load(ft_model_lora(model), adapter_dir);
    int32_t *ids = ft_xcalloc((size_t)n * 4, sizeof *ids), *positions = ids + n, *segments = ids + 2 * n,
            *targets = ids + 3 * n;
    for (int i = 0; i < n; i++) {
        ids[i] = atoi(token_args[i]);
        positions[i] = i;
        targets[i] = -1;
    }
    size_t count = status == 0 ? (size_t)n * (size_t)ft_model_get_config(model)->vocab_size : 0;
    float *logits = ft_xmalloc((count ? count : 1) * sizeof(float));
    ft_batch batch = {1, n, ids, positions, segments, targets, 0, 0};
    if (status == 0)
        status = ft_model_forward(model, &batch, logits, NULL);
    FILE *out = status == 0 ? fopen(out_path, "wb") : NULL;
    if (status == 0 && (!out || fwrite(logits, sizeof(float), count, out) != count))
        status = ft_error_errno("cannot write %s", out_path);
    if (out && fclose(out) != 0 && status == 0)
        status = ft_error_errno("cannot write %s", out_path);
    free(logits);
    free(ids);
    ft_model_free(model);
    ft_backend_destroy(cpu);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: ftpipe_logits MODEL_DIR ADAPTER_DIR|- OUT TOKEN...\n");
        return 2;
    }
    const char *adapter = argv[2][0] == '-' && !argv[2][1] ? NULL : argv[2];
    if (write_logits(argv[1], adapter, argv[3], argc - 4, argv + 4) < 0) {
        fprintf(stderr, "ftpipe_logits: %s\n", ft_error_message());
        return 1;
    }
    return 0;
}
