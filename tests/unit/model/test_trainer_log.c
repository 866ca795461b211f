/* trainer_log: a log with steps done again after a resume compacts to one line
 * per step in order; trainer_state.json has transformers' TrainerState fields,
 * keys sorted, the log entries up to its step in the HF Trainer's names (no
 * clock-dependent ones), and the summary entry only at the end. */
#include <jansson.h>

#include "check.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/trainer_log.h"

static char root[] = "/tmp/ftpipe-trainer-log.XXXXXX";

/* Steps 1-4 logged, an evaluation at 2, a resume from step 2's checkpoint doing 3 and 4 again. */
static const char log_with_resume[] =
    "{\"step\":1,\"epoch\":0.25,\"loss\":2.5,\"learning_rate\":0.001,\"grad_norm\":1.5,\"tokens_per_s\":900.0}\n"
    "{\"step\":2,\"epoch\":0.5,\"loss\":2.25,\"learning_rate\":0.0005,\"grad_norm\":1.25,\"tokens_per_s\":950.0}\n"
    "{\"step\":2,\"epoch\":0.5,\"eval_loss\":2.75,\"eval_runtime\":0.5}\n"
    "{\"step\":3,\"epoch\":0.75,\"loss\":9.0,\"learning_rate\":0.0,\"grad_norm\":9.0,\"tokens_per_s\":1.0}\n"
    "{\"step\":3,\"epoch\":0.75,\"loss\":2.0,\"learning_rate\":0.00025,\"grad_norm\":1.0,\"tokens_per_s\":990.0}\n"
    "{\"step\":4,\"epoch\":1.0,\"loss\":1.75,\"learning_rate\":0.0,\"grad_norm\":0.5,\"tokens_per_s\":991.0}\n";

TEST(compacts_steps_done_again_after_a_resume)
{
    size_t length;
    char *compact = ft_trainer_log_compact(log_with_resume, &length);
    CHECK_INT(length, strlen(compact));
    int lines = 0;
    for (const char *p = compact; *p; p++)
        lines += *p == '\n';
    CHECK_INT(lines, 5);
    CHECK(strstr(compact, "\"loss\":9.0") == NULL);
    CHECK(strstr(compact, "\"eval_loss\":2.75") < strstr(compact, "\"step\":3")); /* the evaluation stays */
    free(compact);

    /* a resume from before the evaluation drops it with its step */
    char *again = ft_xasprintf("%s{\"step\":2,\"epoch\":0.5,\"loss\":2.0,\"learning_rate\":0.0005,\"grad_norm\":1.0}\n",
                               log_with_resume);
    compact = ft_trainer_log_compact(again, &length);
    CHECK(strstr(compact, "eval_loss") == NULL && strstr(compact, "\"step\":3") == NULL);
    free(compact);
    free(again);
    compact = ft_trainer_log_compact("", &length);
    CHECK_STR(compact, "");
    CHECK_INT(length, 0);
    free(compact);
}

static json_t *write_and_load(const char *name, const char *log, const ft_trainer_state_info *info, char **text)
{
    char *path = ft_path_join(root, name);
    CHECK_INT(ft_trainer_state_write(path, log, info), 0);
    size_t length;
    CHECK_INT(ft_read_file(path, text, &length), 0);
    json_t *state = json_loads(*text, 0, NULL);
    free(path);
    return state;
}

TEST(writes_the_hf_trainer_state)
{
    size_t length;
    char *log = ft_trainer_log_compact(log_with_resume, &length);
    ft_trainer_state_info info = {.global_step = 2, .epoch = 0.5, .max_steps = 4, .num_train_epochs = 1,
                                  .logging_steps = 1, .eval_steps = 2, .save_steps = 2, .train_batch_size = 8};
    char *text = NULL;
    json_t *state = write_and_load("at_2.json", log, &info, &text);
    CHECK(state != NULL);
    /* transformers' TrainerState fields (total_flos left out), sorted as save_to_json sorts them */
    static const char *const fields[] = {
        "best_global_step", "best_metric", "best_model_checkpoint", "epoch", "eval_steps", "global_step",
        "is_hyper_param_search", "is_local_process_zero", "is_world_process_zero", "log_history", "logging_steps",
        "max_steps", "num_input_tokens_seen", "num_train_epochs", "save_steps", "stateful_callbacks",
        "train_batch_size", "trial_name", "trial_params"};
    const char *previous = text;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char *quoted = ft_xasprintf("\n  \"%s\": ", fields[i]);
        const char *at = strstr(text, quoted);
        CHECK(at != NULL && at >= previous);
        previous = at ? at : previous;
        free(quoted);
    }
    CHECK_INT(json_object_size(state), sizeof fields / sizeof fields[0]);
    CHECK_INT(json_integer_value(json_object_get(state, "global_step")), 2);
    CHECK_INT(json_integer_value(json_object_get(state, "train_batch_size")), 8);
    CHECK(json_is_null(json_object_get(state, "best_metric")));
    json_t *history = json_object_get(state, "log_history");
    CHECK_INT(json_array_size(history), 3); /* steps 1 and 2, the evaluation at 2 */
    json_t *train_entry = json_array_get(history, 1), *eval_entry = json_array_get(history, 2);
    CHECK_INT(json_object_size(train_entry), 5);
    CHECK(json_real_value(json_object_get(train_entry, "grad_norm")) == 1.25);
    CHECK(json_object_get(train_entry, "tokens_per_s") == NULL);
    CHECK_INT(json_object_size(eval_entry), 3);
    CHECK(json_real_value(json_object_get(eval_entry, "eval_loss")) == 2.75);
    CHECK(text[strlen(text) - 1] == '\n');
    json_decref(state);
    free(text);

    /* at the end: every entry, then the summary */
    info.global_step = 4;
    info.epoch = 1.0;
    info.training_ended = true;
    info.train_loss = 2.125;
    state = write_and_load("end.json", log, &info, &text);
    history = json_object_get(state, "log_history");
    CHECK_INT(json_array_size(history), 6);
    json_t *summary = json_array_get(history, 5);
    CHECK_INT(json_object_size(summary), 3);
    CHECK(json_real_value(json_object_get(summary, "train_loss")) == 2.125);
    CHECK_INT(json_integer_value(json_object_get(summary, "step")), 4);
    json_decref(state);
    /* the same log and step write the same bytes */
    char *again = NULL;
    json_decref(write_and_load("end_again.json", log, &info, &again));
    CHECK_STR(again, text);
    free(again);
    free(text);
    free(log);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(compacts_steps_done_again_after_a_resume);
    RUN(writes_the_hf_trainer_state);
    ft_remove_tree(root);
    return check_done();
}
