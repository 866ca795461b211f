/* Gradient checkpointing: the same gradients, bit for bit, as keeping every
 * activation (LoRA with dropout, and full fine-tuning; Qwen2, Qwen3 and Llama 3
 * tiny random models, packed rows), over two accumulated micro-batches; and the
 * activation plan that shrinks by all but one layer's set. */
#include "check.h"
#include "tiny_models.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/model_init.h"

enum { BATCH = 2, SEQ = 24, ROWS = BATCH * SEQ };

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-checkpointing.XXXXXX";

static ft_model *load(const char *dir, ft_finetuning finetuning, bool checkpointing)
{
    ft_model_options options = {BATCH, SEQ, finetuning, finetuning == FT_FINETUNE_LORA,
                                {4, 8.0, 0.2, false, FT_LORA_ALL_TARGETS, 5}, checkpointing, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(dir, cpu, &options, &model) < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK(model != NULL);
    return model;
}

/* B starts at zero, which would leave A's gradients zero: give it weight. */
static void set_lora_b(ft_model *model)
{
    size_t count;
    const ft_param_tensor *tensors = ft_model_trainable(model, &count);
    for (size_t i = 1; i < count; i += 2)
        for (size_t k = 0; k < tensors[i].count; k++)
            tensors[i].value[k] = 0.01f * (float)(k % 7) - 0.03f;
}

/* Two packed samples a row, two micro-batches with their own dropout seeds. */
static void run_steps(ft_model *model, double *losses)
{
    static int32_t tokens[ROWS], positions[ROWS], segments[ROWS], targets[ROWS];
    ft_model_zero_grads(model);
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < ROWS; i++) {
            int column = i % SEQ, split = 9 + (i / SEQ) * 4;
            tokens[i] = (int32_t)(ft_random_u64(100 + step, i) % FT_BUILTIN_TOKENIZER_VOCAB);
            segments[i] = column < split ? 0 : 1;
            positions[i] = column < split ? column : column - split;
        }
        for (int i = 0; i < ROWS; i++)
            targets[i] = i % SEQ == SEQ - 1 || i % SEQ == 8 ? -100 : tokens[i + 1];
        ft_batch batch = {BATCH, SEQ, tokens, positions, segments, targets, 2 * ROWS, 40 + (uint64_t)step};
        CHECK_INT(ft_model_forward_backward(model, &batch, &losses[step]), 0);
    }
}

static void check_same_gradients(const char *dir, ft_finetuning finetuning)
{
    ft_model *kept = load(dir, finetuning, false), *recomputed = load(dir, finetuning, true);
    if (!kept || !recomputed)
        goto done;
    if (finetuning == FT_FINETUNE_LORA) {
        set_lora_b(kept);
        set_lora_b(recomputed);
    }
    double losses_kept[2], losses_recomputed[2];
    run_steps(kept, losses_kept);
    run_steps(recomputed, losses_recomputed);
    CHECK(losses_kept[0] == losses_recomputed[0] && losses_kept[1] == losses_recomputed[1]);
    size_t count;
    const ft_param_tensor *expected = ft_model_trainable(kept, &count);
    const ft_param_tensor *actual = ft_model_trainable(recomputed, &count);
    CHECK(count > 0);
    size_t differing = 0, nonzero = 0;
    for (size_t i = 0; i < count; i++) {
        differing += memcmp(expected[i].grad, actual[i].grad, expected[i].count * sizeof(float)) != 0;
        for (size_t k = 0; k < expected[i].count; k++)
            nonzero += expected[i].grad[k] != 0.0f;
    }
    if (differing)
        fprintf(stderr, "  %s: %zu of %zu gradients differ\n", dir, differing, count);
    CHECK_INT(differing, 0);
    CHECK(nonzero > 0);
    /* less memory for the same work */
    ft_memory_plan with = ft_model_memory(recomputed), without = ft_model_memory(kept);
    CHECK(with.activation_bytes < without.activation_bytes);
done:
    ft_model_free(kept);
    ft_model_free(recomputed);
}

TEST(qwen2_gradients_are_the_same_with_checkpointing)
{
    char *dir = tiny_model_write(root, "qwen2", FT_ARCH_QWEN2, 3, 11);
    check_same_gradients(dir, FT_FINETUNE_LORA);
    check_same_gradients(dir, FT_FINETUNE_FULL);
    free(dir);
}

TEST(qwen3_gradients_are_the_same_with_checkpointing)
{
    char *dir = tiny_model_write(root, "qwen3", FT_ARCH_QWEN3, 3, 11);
    check_same_gradients(dir, FT_FINETUNE_LORA);
    check_same_gradients(dir, FT_FINETUNE_FULL);
    free(dir);
}

TEST(llama3_gradients_are_the_same_with_checkpointing)
{
    char *dir = tiny_model_write(root, "llama3", FT_ARCH_LLAMA, 3, 11);
    check_same_gradients(dir, FT_FINETUNE_LORA);
    check_same_gradients(dir, FT_FINETUNE_FULL);
    free(dir);
}

/* Checkpointing keeps one layer's set instead of every layer's: the saving is
 * (layers - 1) sets, the same for any number of layers. */
TEST(checkpointing_plans_one_layer_of_activations)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2.5-0.5b", &config), 0);
    ft_model_options options = {8, 1024, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 0}, false, false, false, 0, 0, false};
    ft_memory_plan kept[2], recomputed[2];
    for (int i = 0; i < 2; i++) {
        options.gradient_checkpointing = false;
        CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_F32, &kept[i]), 0);
        options.gradient_checkpointing = true;
        CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_F32, &recomputed[i]), 0);
        config.num_hidden_layers++;
    }
    size_t set = kept[1].activation_bytes - kept[0].activation_bytes; /* one layer: its input and its set */
    size_t input = recomputed[1].activation_bytes - recomputed[0].activation_bytes;
    CHECK_INT(input, (size_t)8 * 1024 * config.hidden_size * sizeof(float));
    CHECK_INT(kept[0].activation_bytes - recomputed[0].activation_bytes, 23 * (set - input));
    CHECK_INT(kept[0].total_bytes - recomputed[0].total_bytes, 23 * (set - input));
    /* inference has one shared set either way */
    options.finetuning = FT_FINETUNE_NONE;
    options.gradient_checkpointing = false;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_F32, &kept[0]), 0);
    options.gradient_checkpointing = true;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_F32, &recomputed[0]), 0);
    CHECK_INT(kept[0].activation_bytes, recomputed[0].activation_bytes);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    if (!mkdtemp(root))
        return 1;
    RUN(qwen2_gradients_are_the_same_with_checkpointing);
    RUN(qwen3_gradients_are_the_same_with_checkpointing);
    RUN(llama3_gradients_are_the_same_with_checkpointing);
    RUN(checkpointing_plans_one_layer_of_activations);
    ft_remove_tree(root);
    ft_backend_destroy(cpu);
    return check_done();
}
