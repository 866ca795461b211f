/* Tests of train_work: operations per token of a forward pass and of a training
 * step, by fine-tuning type, recomputation and shape. (Their use, time against
 * measured time: tests/e2e/test_estimate_time.sh.) */
#include "check.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/train_work.h"

static ft_model_config qwen_0_5b(void)
{
    ft_model_config config;
    ft_model_shape("qwen2.5-0.5b", &config);
    return config;
}

static bool near(double a, double b) { return a > b * 0.999999 && a < b * 1.000001; }

/* Products and attention of one forward pass per token, unweighted. */
static double raw_forward(const ft_model_config *c, double row_tokens)
{
    double query = (double)c->num_attention_heads * c->head_dim, key_value = (double)c->num_key_value_heads * c->head_dim;
    double layer = c->hidden_size * (query + 2 * key_value) + query * c->hidden_size +
                   3.0 * c->hidden_size * c->intermediate_size;
    double products = 2.0 * (c->num_hidden_layers * layer + (double)c->hidden_size * c->vocab_size);
    return products + 4.0 * (row_tokens / 2.0) * query * c->num_hidden_layers; /* half the row on average */
}

TEST(a_forward_pass_is_two_operations_per_weight_of_each_product_and_attention)
{
    ft_model_config c = qwen_0_5b();
    ft_model_options full = {4, 512, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_train_work work;
    CHECK_INT(ft_train_work_per_token(&c, &full, 512.0, &work), 0);
    CHECK(near(work.forward, raw_forward(&c, 512.0) * (1.0 + FT_SMALL_SHAPE_HIDDEN / c.hidden_size)));
    /* full fine-tuning: the forward pass and two of it backward */
    CHECK(near(work.train, 3.0 * work.forward));
}

TEST(lora_skips_the_frozen_weights_gradient_and_recomputation_adds_the_layers_forward)
{
    ft_model_config c = qwen_0_5b();
    ft_model_options full = {4, 512, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_model_options lora = {4, 512, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, false, false, false, 0, 0, false};
    ft_model_options recomputed = lora;
    recomputed.gradient_checkpointing = true;
    ft_train_work a, b, r;
    CHECK_INT(ft_train_work_per_token(&c, &full, 512.0, &a), 0);
    CHECK_INT(ft_train_work_per_token(&c, &lora, 512.0, &b), 0);
    CHECK_INT(ft_train_work_per_token(&c, &recomputed, 512.0, &r), 0);
    CHECK(b.forward > a.forward);             /* the adapter's products */
    CHECK(b.train < a.train * 0.75);          /* about 2/3 of full fine-tuning */
    CHECK(b.train > a.train * 0.6);
    double head = 2.0 * c.hidden_size * c.vocab_size * (1.0 + FT_SMALL_SHAPE_HIDDEN / c.hidden_size);
    CHECK(near(r.train, b.train + b.forward - head)); /* the layers' forward again, not the head's */
}

TEST(longer_rows_cost_more_per_token_through_attention_and_small_shapes_weigh_more)
{
    ft_model_config c = qwen_0_5b();
    ft_model_options full = {4, 2048, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_train_work short_rows, long_rows, wide;
    CHECK_INT(ft_train_work_per_token(&c, &full, 128.0, &short_rows), 0);
    CHECK_INT(ft_train_work_per_token(&c, &full, 2048.0, &long_rows), 0);
    CHECK(long_rows.forward > short_rows.forward);
    /* a small shape's operations weigh more: hidden 256 counts each twice */
    ft_model_config narrow = c;
    narrow.hidden_size = 256;
    narrow.num_attention_heads = 4;
    narrow.num_key_value_heads = 2;
    narrow.head_dim = 64;
    CHECK_INT(ft_train_work_per_token(&narrow, &full, 128.0, &wide), 0);
    CHECK(near(wide.forward, 2.0 * raw_forward(&narrow, 128.0)));
    /* a model the memory plan refuses is refused here too */
    ft_model_options broken = {4, 512, FT_FINETUNE_LORA, false, {0}, false, false, false, 0, 0, false};
    CHECK_INT(ft_train_work_per_token(&c, &broken, 512.0, &wide), -1);
}

int main(void)
{
    RUN(a_forward_pass_is_two_operations_per_weight_of_each_product_and_attention);
    RUN(lora_skips_the_frozen_weights_gradient_and_recomputation_adds_the_layers_forward);
    RUN(longer_rows_cost_more_per_token_through_attention_and_small_shapes_weigh_more);
    return check_done();
}
