/* Row slices per rank (full steps, an epoch's short last step, more ranks than
 * rows) and gradient buckets (adjacent tensors merge up to the bucket size;
 * gaps, frozen tensors and oversized tensors split). */
#include "check.h"
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

int main(void)
{
    RUN(splits_rows_in_rank_order);
    RUN(buckets_merge_adjacent_gradients);
    return check_done();
}
