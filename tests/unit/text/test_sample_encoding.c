/* Tests of LLaMA-Factory's supervised encoding: infer_seqlen's numbers, turn
 * assembly with cutoff, mask_history and train_on_prompt, and greedy packing.
 * Expected values come from LLaMA-Factory's own Python (processor_utils.py
 * infer_seqlen and greedy_knapsack, supervised.py _encode_data_example). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/text/sample_encoding.h"

TEST(infer_seqlen_matches_llamafactory)
{
    static const struct {
        size_t source, target, budget, new_source, new_target;
    } cases[] = {
        {10, 5, 100, 10, 5},     /* fits */
        {100, 20, 50, 30, 20},   /* short target kept whole */
        {20, 100, 50, 20, 30},   /* short source kept whole */
        {60, 40, 50, 30, 20},    /* both cut in proportion */
        {300, 700, 512, 154, 358},
        {4, 3, 3, 2, 1},
        {5, 5, 0, 0, 0},
        {0, 9, 4, 0, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t source, target;
        ft_infer_seqlen(cases[i].source, cases[i].target, cases[i].budget, &source, &target);
        CHECK_INT(source, cases[i].new_source);
        CHECK_INT(target, cases[i].new_target);
    }
}

/* "ids/mask" as "1:0 2:0 5:1". Caller frees. */
static char *describe(const ft_encoded_sample *sample)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < sample->n_tokens; i++)
        ft_strbuf_printf(&text, "%s%u:%u", i ? " " : "", sample->ids[i], sample->loss_mask[i]);
    char *result = ft_strbuf_take(&text);
    ft_strbuf_free(&text);
    return result;
}

TEST(assembles_turns_as_llamafactory_does)
{
    static const uint32_t source1[] = {1, 2, 3, 4}, target1[] = {5, 6, 7};
    static const uint32_t source2[] = {8, 9, 10, 11}, target2[] = {12, 13, 14};
    const ft_turn_tokens turns[] = {{source1, 4, target1, 3}, {source2, 4, target2, 3}};
    static const struct {
        ft_encoding_options options;
        const char *expected;
    } cases[] = {
        {{100, false, false, true}, "1:0 2:0 3:0 4:0 5:1 6:1 7:1 8:0 9:0 10:0 11:0 12:1 13:1 14:1"},
        {{10, false, false, true}, "1:0 2:0 3:0 4:0 5:1 6:1 7:1 8:0 9:0 12:1"},
        {{10, false, true, true}, "1:0 2:0 5:0 8:0 9:0 10:0 11:0 12:1 13:1 14:1"},
        {{100, true, false, true}, "1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1 9:1 10:1 11:1 12:1 13:1 14:1"},
        {{7, false, false, true}, "1:0 2:0 3:0 4:0 5:1 6:1 7:1"},
        {{100, false, true, true}, "1:0 2:0 3:0 4:0 5:0 6:0 7:0 8:0 9:0 10:0 11:0 12:1 13:1 14:1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_encoded_sample sample;
        ft_encode_turns(turns, 2, &cases[i].options, &sample);
        char *text = describe(&sample);
        CHECK_STR(text, cases[i].expected);
        CHECK_INT(sample.full_tokens, 14);
        free(text);
        ft_encoded_sample_free(&sample);
    }
}

TEST(cuts_one_long_turn_in_proportion)
{
    uint32_t source[300], target[700];
    for (uint32_t i = 0; i < 300; i++)
        source[i] = i;
    for (uint32_t i = 0; i < 700; i++)
        target[i] = 1000 + i;
    const ft_turn_tokens turn = {source, 300, target, 700};
    const ft_encoding_options options = {512, false, false, true};
    ft_encoded_sample sample;
    ft_encode_turns(&turn, 1, &options, &sample);
    CHECK_INT(sample.n_tokens, 512);
    CHECK_INT(sample.full_tokens, 1000);
    CHECK_INT(sample.ids[153], 153);
    CHECK_INT(sample.loss_mask[153], 0);
    CHECK_INT(sample.ids[154], 1000);
    CHECK_INT(sample.loss_mask[154], 1);
    CHECK_INT(sample.ids[511], 1357);
    ft_encoded_sample_free(&sample);
}

TEST(packs_rows_as_llamafactory_greedy_knapsack)
{
    size_t lengths[40];
    for (size_t i = 0; i < 40; i++)
        lengths[i] = (i * 37 + 11) % 61 + 1;
    static const size_t expected_order[40] = {31, 8,  26, 13, 21, 18, 16, 23, 11, 28, 39, 0,  6,  33,
                                              34, 5,  1,  38, 29, 10, 24, 15, 19, 20, 14, 25, 9,  30,
                                              37, 2,  4,  35, 32, 7,  27, 12, 22, 17, 36, 3};
    size_t order[40], *row_starts, n_rows;
    ft_pack_rows(lengths, 40, 64, order, &row_starts, &n_rows);
    CHECK_INT(n_rows, 20);
    for (size_t i = 0; i < 40; i++)
        CHECK_INT(order[i], expected_order[i]);
    for (size_t r = 0; r <= n_rows; r++)
        CHECK_INT(row_starts[r], 2 * r);
    free(row_starts);

    const size_t small[] = {5, 3, 7, 2, 8, 1, 4, 4};
    ft_pack_rows(small, 8, 8, order, &row_starts, &n_rows);
    static const size_t small_order[] = {4, 2, 5, 0, 1, 7, 6, 3};
    static const size_t small_rows[] = {0, 1, 3, 5, 7, 8};
    CHECK_INT(n_rows, 5);
    for (size_t i = 0; i < 8; i++)
        CHECK_INT(order[i], small_order[i]);
    for (size_t r = 0; r <= 5 && r <= n_rows; r++)
        CHECK_INT(row_starts[r], small_rows[r]);
    free(row_starts);
}

TEST(chooses_the_same_validation_set_for_the_same_seed)
{
    bool first[100], second[100], other[100];
    size_t n_first, n_second, n_other;
    CHECK_INT(ft_choose_validation(100, 0.1, 42, first, &n_first), 0);
    CHECK_INT(ft_choose_validation(100, 0.1, 42, second, &n_second), 0);
    CHECK_INT(ft_choose_validation(100, 0.1, 7, other, &n_other), 0);
    CHECK_INT(n_first, 10);
    CHECK(memcmp(first, second, sizeof first) == 0);
    CHECK(memcmp(first, other, sizeof first) != 0);
    size_t marked = 0;
    for (size_t i = 0; i < 100; i++)
        marked += first[i];
    CHECK_INT(marked, 10);

    CHECK_INT(ft_choose_validation(10, 0.05, 42, first, &n_first), 0);
    CHECK_INT(n_first, 1); /* rounded up */
    CHECK_INT(ft_choose_validation(10, 3, 42, first, &n_first), 0);
    CHECK_INT(n_first, 3);
    CHECK_INT(ft_choose_validation(10, 0, 42, first, &n_first), 0);
    CHECK_INT(n_first, 0);
    CHECK_INT(ft_choose_validation(10, 10, 42, first, &n_first), -1);
    CHECK_STR(ft_error_message(), "val_size = 10 leaves no training samples: there are 10 samples");
    CHECK_INT(ft_choose_validation(10, 2.5, 42, first, &n_first), -1);
    CHECK_STR(ft_error_message(), "val_size = 2.5: expected a fraction below 1 or a whole count of samples");
    CHECK_INT(ft_choose_validation(10, -0.1, 42, first, &n_first), -1);
    CHECK_STR(ft_error_message(), "val_size = -0.1: expected a fraction below 1 or a whole count of samples");
}

/* A sample of n tokens whose ids start at first_id; full_tokens as given. */
static ft_encoded_sample make_sample(uint32_t first_id, size_t n, size_t full_tokens)
{
    ft_encoded_sample sample = {ft_xmalloc(n * sizeof(uint32_t)), ft_xmalloc(n), n, full_tokens};
    for (size_t i = 0; i < n; i++) {
        sample.ids[i] = first_id + (uint32_t)i;
        sample.loss_mask[i] = i + 1 == n;
    }
    return sample;
}

TEST(writes_samples_plain_and_packed)
{
    char dir[] = "/tmp/ftpipe-test-encoding.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ft_encoded_sample samples[4] = {make_sample(10, 3, 3), make_sample(20, 5, 9), make_sample(30, 2, 2),
                                    make_sample(40, 4, 4)};
    const size_t chosen[] = {0, 1, 3}; /* sample 2 is elsewhere (validation) */
    char *plain = ft_xasprintf("%s/plain", dir), *packed = ft_xasprintf("%s/packed", dir);
    ft_token_split_stats stats;
    size_t written[3];
    CHECK_INT(ft_write_samples(plain, samples, chosen, 3, false, 8, 0, &stats, written), 0);
    CHECK(written[0] == 0 && written[1] == 1 && written[2] == 3);
    CHECK_INT(stats.n_samples, 3);
    CHECK_INT(stats.n_rows, 3);
    CHECK_INT(stats.n_tokens, 12);
    CHECK_INT(stats.n_trained_tokens, 3);
    CHECK_INT(stats.n_truncated, 1);
    CHECK_INT(stats.max_sample_tokens, 5);
    CHECK_INT(ft_write_samples(packed, samples, chosen, 3, true, 8, 0, &stats, written), 0);
    CHECK_INT(stats.n_samples, 3);
    CHECK_INT(stats.n_rows, 2); /* rows filled to 7 of 8, as LLaMA-Factory's: [5 tokens], [4 + 3 tokens] */
    CHECK(written[0] == 1 && written[1] == 3 && written[2] == 0); /* the shards' order */

    ft_token_dataset_meta meta;
    memset(&meta, 0, sizeof meta);
    strcpy(meta.template_name, "plain");
    meta.cutoff_len = 8;
    meta.packing = true;
    meta.train = stats;
    CHECK_INT(ft_token_dataset_meta_write(dir, &meta), 0);
    char *train = ft_xasprintf("%s/train", dir);
    CHECK_INT(rename(packed, train), 0);
    ft_token_shards *shards;
    CHECK_INT(ft_token_shards_open(dir, "train", &shards), 0);
    ft_token_row row;
    ft_token_shards_row(shards, 0, &row);
    CHECK_INT(row.n_tokens, 5);
    CHECK_INT(row.n_samples, 1);
    CHECK_INT(row.ids[0], 20);
    ft_token_shards_row(shards, 1, &row);
    CHECK_INT(row.n_tokens, 7);
    CHECK_INT(row.n_samples, 2);
    CHECK_INT(row.ids[0], 40);
    CHECK_INT(row.ids[4], 10);
    ft_token_shards_close(shards);

    CHECK_INT(ft_remove_tree(dir), 0);
    free(train);
    free(plain);
    free(packed);
    for (size_t i = 0; i < 4; i++)
        ft_encoded_sample_free(&samples[i]);
}

int main(void)
{
    RUN(infer_seqlen_matches_llamafactory);
    RUN(assembles_turns_as_llamafactory_does);
    RUN(cuts_one_long_turn_in_proportion);
    RUN(packs_rows_as_llamafactory_greedy_knapsack);
    RUN(chooses_the_same_validation_set_for_the_same_seed);
    RUN(writes_samples_plain_and_packed);
    return check_done();
}
