/* trainer_log: compacting the log across resumes, and trainer_state.json from it. */
#include "ftpipe/model/trainer_log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

/* Log lines and evaluations share one order: an evaluation comes after its
 * step's log line. */
static int64_t line_order(const char *line, size_t length)
{
    json_t *entry = json_loadb(line, length, 0, NULL);
    int64_t order = entry ? (int64_t)json_integer_value(json_object_get(entry, "step")) * 2 +
                                (json_object_get(entry, "eval_loss") != NULL)
                          : 0;
    json_decref(entry);
    return order;
}

char *ft_trainer_log_compact(const char *text, size_t *length)
{
    ft_strbuf kept;
    ft_strbuf_init(&kept);
    size_t *line_starts = NULL, starts_capacity = 0, n_lines = 0;
    int64_t *orders = NULL;
    size_t orders_capacity = 0;
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t line_length = end ? (size_t)(end - line) : strlen(line);
        int64_t order = line_order(line, line_length);
        while (n_lines > 0 && orders[n_lines - 1] >= order) /* done again after a resume */
            kept.length = line_starts[--n_lines];
        ft_grow((void **)&line_starts, &starts_capacity, n_lines + 1, sizeof *line_starts);
        ft_grow((void **)&orders, &orders_capacity, n_lines + 1, sizeof *orders);
        line_starts[n_lines] = kept.length;
        orders[n_lines++] = order;
        ft_strbuf_add(&kept, line, line_length);
        ft_strbuf_putc(&kept, '\n');
        line = end ? end + 1 : line + line_length;
    }
    free(line_starts);
    free(orders);
    *length = kept.length;
    return ft_strbuf_take(&kept);
}

/* One log line as the HF Trainer's log_history has it; NULL for lines it has no entry for. */
static json_t *history_entry(json_t *line)
{
    json_t *step = json_object_get(line, "step"), *epoch = json_object_get(line, "epoch");
    if (!json_is_integer(step) || !json_is_number(epoch))
        return NULL;
    static const char *const train_keys[] = {"loss", "grad_norm", "learning_rate"};
    json_t *eval_loss = json_object_get(line, "eval_loss");
    json_t *entry = json_pack("{sO sO}", "step", step, "epoch", epoch);
    if (eval_loss) {
        json_object_set(entry, "eval_loss", eval_loss);
        return entry;
    }
    for (size_t k = 0; k < sizeof train_keys / sizeof train_keys[0]; k++) {
        json_t *value = json_object_get(line, train_keys[k]);
        if (!json_is_number(value)) {
            json_decref(entry);
            return NULL;
        }
        json_object_set(entry, train_keys[k], value);
    }
    return entry;
}

static json_t *log_history(const char *log_text, const ft_trainer_state_info *info)
{
    json_t *history = json_array();
    for (const char *line = log_text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t line_length = end ? (size_t)(end - line) : strlen(line);
        json_t *parsed = json_loadb(line, line_length, 0, NULL);
        json_t *entry = parsed ? history_entry(parsed) : NULL;
        if (entry && json_integer_value(json_object_get(entry, "step")) <= info->global_step)
            json_array_append(history, entry);
        json_decref(entry);
        json_decref(parsed);
        line = end ? end + 1 : line + line_length;
    }
    if (info->training_ended)
        json_array_append_new(history, json_pack("{sf sI sf}", "epoch", info->epoch, "step",
                                                 (json_int_t)info->global_step, "train_loss", info->train_loss));
    return history;
}

int ft_trainer_state_write(const char *path, const char *log_text, const ft_trainer_state_info *info)
{
    /* The fields of transformers' TrainerState, less total_flos (see the header). */
    json_t *state = json_pack(
        "{sn sn sn sf sI sI sb sb sb so sI sI sI sI sI so sI sn sn}", "best_global_step", "best_metric",
        "best_model_checkpoint", "epoch", info->epoch, "eval_steps", (json_int_t)info->eval_steps, "global_step",
        (json_int_t)info->global_step, "is_hyper_param_search", 0, "is_local_process_zero", 1,
        "is_world_process_zero", 1, "log_history", log_history(log_text, info), "logging_steps",
        (json_int_t)info->logging_steps, "max_steps", (json_int_t)info->max_steps, "num_input_tokens_seen",
        (json_int_t)0, "num_train_epochs", (json_int_t)info->num_train_epochs, "save_steps",
        (json_int_t)info->save_steps, "stateful_callbacks", json_object(), "train_batch_size",
        (json_int_t)info->train_batch_size, "trial_name", "trial_params");
    if (!state)
        return ft_error("cannot build %s", path);
    char *text = json_dumps(state, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
    json_decref(state);
    size_t length = strlen(text);
    text[length] = '\n'; /* json_dumps leaves no final newline; its NUL is replaced */
    int status = ft_write_file_atomic(path, text, length + 1);
    free(text);
    return status;
}
