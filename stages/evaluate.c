/* evaluate: a model's answers and loss on held-out data.
 *
 *   report: evaluate models/base adapter data/math_eval.json
 *       checker = sum-equals
 *       compare_base = true
 *
 * Inputs: a model folder, optionally a train output (recognised by its
 * ftpipe_train.json: a LoRA adapter is applied to the model, a fully
 * fine-tuned model replaces it), then the eval data. Prompts are encoded as
 * the tokenize stage encodes them, answers generated in batches and judged by
 * the checker; the loss is computed over the answers as training computes it.
 * The output folder holds results.jsonl, metrics.json and report.md. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/backend/comm_solo.h"
#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/eval/checker.h"
#include "ftpipe/eval/eval_report.h"
#include "ftpipe/eval/evaluation.h"
#include "ftpipe/formats/dataset_inputs.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/train_work.h"
#include "ftpipe/stages/evaluate_run.h"
#include "ftpipe/stages/stage_backend.h"
#include "ftpipe/stages/stage_images.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/sample_encoding.h"
#include "ftpipe/text/tokenizer.h"

enum { EXAMPLES_IN_REPORT = 3 };

/* --- one model --- */

static int report_progress(size_t done, size_t total, void *context)
{
    ft_eval_run *run = context;
    if (run->ranks.local_rank != 0)
        return 0;
    double fraction = ((double)run->phase + (double)done / (double)total) / (double)run->n_phases;
    ft_stage_progress(run->stage, fraction, "model %d/%d, %s %zu/%zu", run->phase / 2 + 1, run->n_phases / 2,
                      run->phase % 2 ? "loss" : "answers", done, total);
    return ft_stage_cancelled(run->stage);
}

/* solo: with offload_param, the communicator of one rank through which the
 * model streams its weights from host memory (ZeRO-3's param_shards.h). */
static int load_model(ft_eval_run *run, bool adapted, ft_backend *backend, ft_comm *solo, ft_model **model)
{
    ft_model_options options;
    const char *dir;
    if (ft_evaluate_model_options(run, adapted, &options, &dir) != 0)
        return -1;
    bool lora = options.use_lora;
    int loaded = solo ? ft_model_load_sharded(dir, backend, &options, solo, true, false, model)
                      : ft_model_load(dir, backend, &options, model);
    if (loaded != 0)
        return ft_error_context("loading the model from %s", dir);
    if (lora && ft_lora_load(ft_model_lora(*model), run->train_dir) != 0) {
        ft_model_free(*model);
        *model = NULL;
        return ft_error_context("loading the adapter of %s", run->train_dir);
    }
    return 0;
}

static double seconds_since(uint64_t start_ns)
{
    return (double)(ft_now_ns() - start_ns) / 1e9;
}

/* This rank's samples: r, r + ranks, r + 2 ranks, ... (all of them with one rank). */
static size_t shard_of(const ft_eval_run *run, size_t *indices)
{
    size_t n = 0;
    for (size_t i = (size_t)run->ranks.rank; i < run->count; i += (size_t)(run->ranks.size > 1 ? run->ranks.size : 1))
        indices[n++] = i;
    return n;
}

/* Every rank's answers, in sample order, on every rank: fixed-size slots of
 * [length, ids...], one per sample of a rank's shard. */
static int gather_answers(ft_eval_run *run, const size_t *indices, size_t n, int32_t *answer_ids, int *answer_lengths)
{
    ft_comm *comm = run->ranks.comm;
    size_t n_new = (size_t)run->generate.max_new_tokens, slot = n_new + 1;
    size_t per_rank = (run->count + (size_t)comm->size - 1) / (size_t)comm->size;
    int32_t *mine = ft_xcalloc(per_rank * slot, sizeof *mine), *all = ft_xmalloc(per_rank * slot * sizeof *all *
                                                                                   (size_t)comm->size);
    for (size_t j = 0; j < n; j++) {
        mine[j * slot] = answer_lengths[indices[j]];
        memcpy(mine + j * slot + 1, answer_ids + indices[j] * n_new, n_new * sizeof *mine);
    }
    int status = comm->all_gather(comm, mine, all, per_rank * slot * sizeof *mine);
    for (int k = 0; k < comm->size && status == 0; k++)
        for (size_t j = 0; j < per_rank; j++) {
            size_t sample = j * (size_t)comm->size + (size_t)k;
            if (sample >= run->count)
                break;
            const int32_t *record = all + ((size_t)k * per_rank + j) * slot;
            answer_lengths[sample] = record[0];
            memcpy(answer_ids + sample * n_new, record + 1, n_new * sizeof *record);
        }
    free(mine);
    free(all);
    return status < 0 ? ft_error_context("gathering the ranks' answers") : 0;
}

/* The loss over every rank's samples: their loss sums and token counts added. */
static int add_losses(ft_eval_run *run, ft_eval_result *result)
{
    double sums[2] = {result->eval_loss * (double)result->loss_tokens, (double)result->loss_tokens};
    ft_comm *comm = run->ranks.comm;
    if (comm->all_reduce_sum(comm, sums, 2, FT_COMM_F64) < 0)
        return ft_error_context("adding the ranks' losses");
    result->loss_tokens = (uint64_t)sums[1];
    result->eval_loss = sums[1] > 0.0 ? sums[0] / sums[1] : 0.0;
    return 0;
}

/* Loads, generates and scores the loss, with times and peak memory: this
 * rank's share of the samples, gathered from all ranks. */
static int run_model(ft_eval_run *run, bool adapted, int32_t *answer_ids, int *answer_lengths, ft_eval_result *result)
{
    ft_backend *backend = ft_stage_backend_for_rank(run->stage, "evaluating", run->ranks.local_rank,
                                                    run->ranks.local_size);
    if (!backend)
        return -1;
    run->device = backend->name;
    uint64_t start = ft_now_ns();
    ft_model *model = NULL;
    ft_generator *generator = NULL;
    size_t *indices = ft_xmalloc((run->count ? run->count : 1) * sizeof *indices);
    size_t n = shard_of(run, indices);
    size_t n_new = (size_t)run->generate.max_new_tokens;
    ft_token_span *prompts = ft_xmalloc((n ? n : 1) * sizeof *prompts);
    ft_sample_images *images = run->images.table ? ft_xmalloc((n ? n : 1) * sizeof *images) : NULL;
    ft_encoded_sample *encoded = ft_xmalloc((n ? n : 1) * sizeof *encoded);
    int32_t *shard_ids = ft_xmalloc((n ? n : 1) * n_new * sizeof *shard_ids);
    int *shard_lengths = ft_xcalloc(n ? n : 1, sizeof *shard_lengths);
    for (size_t j = 0; j < n; j++) {
        prompts[j] = run->samples[indices[j]].prompt;
        encoded[j] = run->samples[indices[j]].encoded;
        if (images)
            images[j] = run->images.per_sample[indices[j]];
    }
    ft_comm *solo = run->offload_param ? ft_comm_solo_create(backend) : NULL;
    int status = load_model(run, adapted, backend, solo, &model);
    if (status == 0) {
        result->load_s = seconds_since(start);
        result->load_peak_bytes = backend->peak_bytes(backend);
        status = ft_generator_create(model, run->batch_size, run->max_generate_tokens, &generator);
    }
    if (status == 0) {
        uint64_t generate_start = ft_now_ns();
        status = ft_evaluate_answers(generator, prompts, images, n, run->batch_size, &run->generate, report_progress, run,
                                     shard_ids, shard_lengths);
        for (size_t j = 0; j < n && status == 0; j++) {
            answer_lengths[indices[j]] = shard_lengths[j];
            memcpy(answer_ids + indices[j] * n_new, shard_ids + j * n_new, n_new * sizeof *shard_ids);
        }
        if (status == 0 && run->ranks.comm)
            status = gather_answers(run, indices, n, answer_ids, answer_lengths);
        if (status == 0 && solo && run->ranks.local_rank == 0) {
            ft_param_shards_stats streamed = ft_param_shards_get_stats(ft_model_param_shards(model));
            ft_stage_log(run->stage, "offload_param: the weights stay in host memory; generating gathered %lu units "
                                     "(a layer, the embeddings or the head), %lu of them ahead of their use",
                         streamed.gathers, streamed.gathered_ahead);
        }
        result->generate_s = seconds_since(generate_start);
        result->peak_bytes = backend->peak_bytes(backend);
        run->phase++;
    }
    ft_generator_free(generator);
    if (status == 0) {
        uint64_t loss_start = ft_now_ns();
        status = ft_evaluate_loss(model, encoded, images, n, run->batch_size, report_progress, run, &result->eval_loss,
                                  &result->loss_tokens);
        if (status == 0 && run->ranks.comm)
            status = add_losses(run, result);
        result->loss_s = seconds_since(loss_start);
        run->phase++;
    }
    ft_model_free(model);
    ft_comm_destroy(solo);
    ft_backend_destroy(backend);
    free(indices);
    free(prompts);
    free(images);
    free(encoded);
    free(shard_ids);
    free(shard_lengths);
    return status;
}

/* Evaluates one model: its answers decoded and judged. */
static int evaluate_model(ft_eval_run *run, bool adapted, ft_eval_outcome *outcome)
{
    const char *dir = adapted ? run->train_dir : run->model_dir;
    ft_eval_result *result = &outcome->result;
    result->model = ft_path_basename(dir);
    result->n_samples = run->count;
    bool first = run->ranks.local_rank == 0;
    if (first)
        ft_stage_log(run->stage, "evaluating %s", dir);
    int n_new = run->generate.max_new_tokens;
    int32_t *answer_ids = ft_xmalloc(run->count * (size_t)n_new * sizeof *answer_ids);
    int *answer_lengths = ft_xcalloc(run->count, sizeof *answer_lengths);
    outcome->answers = ft_xcalloc(run->count, sizeof(char *));
    outcome->correct = ft_xcalloc(run->count, sizeof(bool));
    uint64_t start = ft_now_ns();
    int status = run_model(run, adapted, answer_ids, answer_lengths, result);
    for (size_t i = 0; i < run->count && status == 0 && first; i++) { /* judged once, by the node's first rank */
        const ft_eval_sample *sample = &run->samples[i];
        result->generated_tokens += (uint64_t)answer_lengths[i];
        status = ft_tokenizer_decode_generated(run->tokenizer, (const uint32_t *)(answer_ids + i * (size_t)n_new),
                                     (size_t)answer_lengths[i], &outcome->answers[i]);
        if (status == 0)
            status = ft_checker_judge(run->checker, sample->question, outcome->answers[i], sample->expected,
                                      &outcome->correct[i]);
        result->n_correct += outcome->correct[i];
    }
    result->total_s = seconds_since(start);
    free(answer_ids);
    free(answer_lengths);
    return status;
}

/* The rate `ftpipe estimate` predicts time from. */
static void log_rate(ft_eval_run *run, size_t n_models, double seconds, double cpu_seconds)
{
    double ops;
    if (!run->device || ft_evaluate_all_models_ops(run, n_models, &ops) != 0)
        return;
    int ranks = run->ranks.size > 1 ? run->ranks.size : 1;
    char *name = ft_xasprintf("evaluate_ops_per_s_%s", run->device);
    if (seconds > 0.0)
        ft_stage_metric(run->stage, 0, name, ops / seconds);
    free(name);
    name = ft_xasprintf("evaluate_ops_per_cpu_s_%s", run->device);
    if (cpu_seconds > 0.0)
        ft_stage_metric(run->stage, 0, name, ops / (cpu_seconds * ranks));
    free(name);
}

/* --- outputs --- */

static int write_text(const char *dir, const char *name, char *text)
{
    char *path = ft_path_join(dir, name);
    int status = ft_write_file_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return status;
}

static int write_results(ft_eval_run *run, const ft_eval_outcome *outcomes, size_t n_models, const char *dir)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < run->count; i++) {
        json_t *line = json_pack("{sI ss ss ss sb}", "index", (json_int_t)i, "prompt", run->samples[i].question,
                                 "expected", run->samples[i].expected, "answer", outcomes[0].answers[i], "correct",
                                 outcomes[0].correct[i]);
        if (!line) {
            ft_strbuf_free(&text);
            return ft_error("%s: record %zu: the text is not valid UTF-8", run->dataset.conversations[i].file,
                            run->dataset.conversations[i].record);
        }
        if (n_models > 1) {
            json_object_set_new(line, "base_answer", json_string(outcomes[1].answers[i]));
            json_object_set_new(line, "base_correct", json_boolean(outcomes[1].correct[i]));
        }
        char *encoded = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(line);
        ft_strbuf_puts(&text, encoded);
        ft_strbuf_putc(&text, '\n');
        free(encoded);
    }
    return write_text(dir, "results.jsonl", ft_strbuf_take(&text));
}

static int write_metrics(ft_eval_run *run, const ft_eval_outcome *outcomes, size_t n_models, const char *dir)
{
    json_t *root = json_object();
    for (size_t m = 0; m < n_models; m++) {
        ft_eval_metric metrics[FT_EVAL_METRIC_COUNT];
        ft_eval_metrics(&outcomes[m].result, m == 0 ? "" : "base_", metrics);
        for (size_t i = 0; i < FT_EVAL_METRIC_COUNT; i++) {
            json_object_set_new(root, metrics[i].name, json_real(metrics[i].value));
            ft_stage_metric(run->stage, 0, metrics[i].name, metrics[i].value);
        }
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    size_t length = strlen(text);
    text = ft_xrealloc(text, length + 2);
    memcpy(text + length, "\n", 2);
    return write_text(dir, "metrics.json", text);
}

static int write_report(ft_eval_run *run, const ft_eval_outcome *outcomes, size_t n_models, const char *dir)
{
    ft_eval_result results[2];
    for (size_t m = 0; m < n_models; m++)
        results[m] = outcomes[m].result;
    ft_strbuf table;
    ft_strbuf_init(&table);
    ft_eval_report_table(results, n_models, &table);
    for (const char *line = table.data; *line;) {
        size_t length = strcspn(line, "\n");
        ft_stage_log(run->stage, "%.*s", (int)length, line);
        line += length + (line[length] == '\n');
    }
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_printf(&text, "# Evaluation of %s on %s\n\n%zu samples, template %s, checker %s\n\n",
                     results[0].model, ft_path_basename(run->data_path), run->count,
                     ft_chat_template_name(run->chat_template), ft_stage_param_string(run->stage, "checker"));
    ft_strbuf_puts(&text, table.data);
    ft_strbuf_puts(&text, "\n## Examples\n\n");
    for (size_t i = 0; i < run->count && i < EXAMPLES_IN_REPORT; i++) {
        ft_eval_answer answers[2];
        for (size_t m = 0; m < n_models; m++)
            answers[m] = (ft_eval_answer){results[m].model, outcomes[m].answers[i], outcomes[m].correct[i]};
        ft_eval_report_example(i + 1, run->samples[i].question, run->samples[i].expected, answers, n_models, &text);
    }
    ft_strbuf_free(&table);
    return write_text(dir, "report.md", ft_strbuf_take(&text));
}

static int write_outputs(ft_eval_run *run, const ft_eval_outcome *outcomes, size_t n_models)
{
    const char *dir = ft_stage_output_path(run->stage);
    if (ft_mkdir_p(dir) != 0 || write_results(run, outcomes, n_models, dir) != 0 ||
        write_metrics(run, outcomes, n_models, dir) != 0 || write_report(run, outcomes, n_models, dir) != 0)
        return -1;
    const ft_eval_result *main = &outcomes[0].result;
    if (n_models > 1)
        ft_stage_summary(run->stage, "accuracy %.4f (base %.4f), eval_loss %.4f (base %.4f), %zu samples",
                         ft_eval_accuracy(main), ft_eval_accuracy(&outcomes[1].result), main->eval_loss,
                         outcomes[1].result.eval_loss, run->count);
    else
        ft_stage_summary(run->stage, "accuracy %.4f, eval_loss %.4f, %zu samples", ft_eval_accuracy(main),
                         main->eval_loss, run->count);
    return 0;
}

static int run_evaluate(ft_stage *stage)
{
    ft_eval_run run = {.stage = stage};
    ft_dataset_init(&run.dataset);
    ft_eval_outcome outcomes[2];
    memset(outcomes, 0, sizeof outcomes);
    size_t n_models = 0;
    int status = ft_evaluate_prepare(&run);
    /* The ranks start before any backend does (stage_ranks.h); with one, this is the only process. */
    bool started = status == 0 && ft_stage_ranks_start(stage, &run.ranks) == 0;
    status = started ? 0 : -1;
    if (status == 0 && run.ranks.size > 1 && run.ranks.local_rank == 0)
        ft_stage_log(stage, "%d ranks share the %zu samples", run.ranks.size, run.count);
    if (status == 0) {
        /* The first model is the one the stage is about: the adapted one when there is a train output. */
        n_models = ft_stage_param_bool(stage, "compare_base") ? 2 : 1;
        run.n_phases = 2 * (int)n_models;
        uint64_t start_ns = ft_now_ns(), start_cpu_ns = ft_process_cpu_ns();
        for (size_t m = 0; m < n_models && status == 0; m++)
            status = evaluate_model(&run, m == 0 && run.train_dir, &outcomes[m]);
        if (status == 0 && run.ranks.local_rank == 0)
            log_rate(&run, n_models, (double)(ft_now_ns() - start_ns) * 1e-9,
                     (double)(ft_process_cpu_ns() - start_cpu_ns) * 1e-9);
    }
    if (status == 0 && run.ranks.writes_output && run.ranks.local_rank == 0)
        status = write_outputs(&run, outcomes, n_models);
    if (started) /* the other ranks end here */
        status = ft_stage_ranks_finish(stage, &run.ranks, status);
    ft_evaluate_free_run(&run, outcomes, n_models);
    return status;
}

const ft_stage_kind ft_kind_evaluate = {
    .name = "evaluate",
    .version = 2, /* 2: LLaMA-Factory's templates (llama3 untrimmed) and stop words */
    .run = run_evaluate,
    .estimate = ft_evaluate_estimate,
};
