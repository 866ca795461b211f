/* Row slices per rank (full steps, an epoch's short last step, more ranks than
 * rows); gradient buckets (adjacent tensors of one layer merge up to the bucket
 * size; gaps, layers, frozen tensors and oversized tensors split); the sync
 * thread adds every bucket over 2 forked ranks whether a rank signals its
 * layers as backward ends them or not at all (a rank without rows). */
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/backend/comm_host.h"
#include "ftpipe/model/data_parallel.h"

static void slice(int64_t rows, int64_t per_rank, int ranks, int rank, int64_t first, int64_t count)
{
    int64_t f = -1, c = -1;
    ft_rank_rows(rows, per_rank, ranks, rank, &f, &c);
    CHECK_INT(f, first);
    CHECK_INT(c, count);
}

TEST(splits_rows_in_rank_order)
{
    slice(8, 4, 2, 0, 0, 4);
    slice(8, 4, 2, 1, 4, 4);
    slice(5, 2, 4, 0, 0, 2); /* a short last step: ceil(5 / 4) = 2 each while they last */
    slice(5, 2, 4, 2, 4, 1);
    slice(5, 2, 4, 3, 5, 0);
    slice(1, 4, 2, 1, 1, 0);
}

TEST(buckets_merge_adjacent_gradients)
{
    float grads[100];
    ft_param_tensor tensors[5] = {
        {.name = "a", .grad = grads, .count = 10},
        {.name = "b", .grad = grads + 10, .count = 10},
        {.name = "frozen", .grad = NULL, .count = 5},
        {.name = "c", .grad = grads + 30, .count = 20}, /* a gap before it */
        {.name = "d", .grad = grads + 50, .count = 50},
    };
    ft_grad_buckets buckets;
    ft_grad_buckets_plan(tensors, 5, 40 * sizeof(float), &buckets);
    CHECK_INT(buckets.n_buckets, 3);
    CHECK(buckets.buckets[0].data == grads && buckets.buckets[0].count == 20);
    CHECK(buckets.buckets[1].data == grads + 30 && buckets.buckets[1].count == 20);
    CHECK(buckets.buckets[2].data == grads + 50 && buckets.buckets[2].count == 50); /* larger than a bucket */
    ft_grad_buckets_free(&buckets);
    ft_grad_buckets_plan(tensors, 5, FT_GRAD_BUCKET_BYTES, &buckets);
    CHECK_INT(buckets.n_buckets, 2);
    CHECK(buckets.buckets[1].data == grads + 30 && buckets.buckets[1].count == 70);
    ft_grad_buckets_free(&buckets);
}

TEST(buckets_split_at_layers)
{
    CHECK_INT(ft_param_layer("base_model.model.model.layers.12.self_attn.q_proj.lora_A.weight"), 12);
    CHECK_INT(ft_param_layer("model.layers.0.input_layernorm.weight"), 0);
    CHECK_INT(ft_param_layer("model.embed_tokens.weight"), -1);
    CHECK_INT(ft_param_layer("model.layers.x.y"), -1);
    float grads[40];
    ft_param_tensor tensors[4] = {
        {.name = "model.layers.0.a", .grad = grads, .count = 10},
        {.name = "model.layers.0.b", .grad = grads + 10, .count = 10},
        {.name = "model.layers.1.a", .grad = grads + 20, .count = 10},
        {.name = "model.norm.weight", .grad = grads + 30, .count = 10},
    };
    ft_grad_buckets buckets;
    ft_grad_buckets_plan(tensors, 4, FT_GRAD_BUCKET_BYTES, &buckets);
    CHECK_INT(buckets.n_buckets, 3);
    CHECK(buckets.buckets[0].count == 20 && buckets.buckets[0].layer == 0);
    CHECK(buckets.buckets[1].count == 10 && buckets.buckets[1].layer == 1);
    CHECK(buckets.buckets[2].count == 10 && buckets.buckets[2].layer == -1);
    ft_grad_buckets_free(&buckets);
}

TEST(sync_adds_every_bucket_whatever_a_rank_signals)
{
    pid_t children[2];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(2, &comm, children);
    if (rank != 0)
        check_case_failed = 0;
    float grads[30];
    ft_param_tensor tensors[3] = {
        {.name = "model.layers.0.a", .grad = grads, .count = 10},
        {.name = "model.layers.1.a", .grad = grads + 10, .count = 10},
        {.name = "lm_head.weight", .grad = grads + 20, .count = 10},
    };
    ft_grad_buckets buckets;
    ft_grad_buckets_plan(tensors, 3, FT_GRAD_BUCKET_BYTES, &buckets);
    ft_grad_sync *sync = ft_grad_sync_create(&buckets, comm);
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 30; i++)
            grads[i] = (float)(i + 100 * rank + step);
        if (rank == 0) { /* as backward ends the layers, the last first */
            ft_grad_sync_layer_done(sync, 1);
            ft_grad_sync_layer_done(sync, 0);
        }
        CHECK_INT(ft_grad_sync_finish(sync), 0);
        int wrong = 0;
        for (int i = 0; i < 30; i++)
            wrong += grads[i] != (float)(2 * (i + step) + 100);
        CHECK_INT(wrong, 0);
    }
    ft_grad_sync_free(sync);
    ft_grad_buckets_free(&buckets);
    ft_comm_destroy(comm);
    if (rank != 0)
        _exit(check_case_failed);
    int status = 0;
    waitpid(children[1], &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    RUN(splits_rows_in_rank_order);
    RUN(buckets_merge_adjacent_gradients);
    RUN(buckets_split_at_layers);
    RUN(sync_adds_every_bucket_whatever_a_rank_signals);
    return check_done();
}
