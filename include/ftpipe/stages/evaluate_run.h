/* evaluate_run: what the evaluate kind's run (stages/evaluate.c) and its
 * estimate (stages/evaluate_estimate.c) share: the stage's inputs, parameters
 * and encoded samples read into one place, and the work a run does. */
#ifndef FTPIPE_EVALUATE_RUN_H
#define FTPIPE_EVALUATE_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/engine/stage.h"
#include "ftpipe/eval/checker.h"
#include "ftpipe/eval/eval_report.h"
#include "ftpipe/eval/evaluation.h"
#include "ftpipe/formats/dataset_inputs.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/model.h"
#include "ftpipe/stages/stage_images.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/sample_encoding.h"
#include "ftpipe/text/tokenizer.h"

enum { FT_EVAL_MAX_STOP_TOKENS = 4 };

/* What ftpipe_train.json says about a train output. */
typedef struct {
    bool full;                  /* a fine-tuned model folder, else a LoRA adapter */
    char *template_name;
    char *tokenizer_hash;
} ft_eval_train_output;

/* One evaluation sample: its question and expected answer as text, the
 * prompt's tokens for generation and the whole sample's for the loss. */
typedef struct {
    const char *question;       /* the last user message */
    const char *expected;       /* the last assistant message */
    ft_token_span prompt;       /* points into encoded (or into full when encoded was cut) */
    ft_encoded_sample encoded;  /* cut at cutoff_len, for the loss */
    ft_encoded_sample full;     /* uncut, only when encoded was cut */
} ft_eval_sample;

/* One model's answers and numbers. */
typedef struct {
    ft_eval_result result;
    char **answers;
    bool *correct;
} ft_eval_outcome;

typedef struct {
    ft_stage *stage;
    const char *model_dir;
    const char *train_dir;      /* NULL without a train output */
    const char *data_path;
    ft_eval_train_output train;
    const ft_chat_template *chat_template;
    ft_tokenizer *tokenizer;
    ft_checker *checker;
    ft_dataset dataset;
    ft_stage_images images;     /* a vision-language template's records' images (table NULL: none) */
    ft_eval_sample *samples;
    size_t count;
    int batch_size;
    int max_generate_tokens;    /* the longest prompt plus max_new_tokens */
    int max_seq_len;            /* that, or the longest loss sample */
    ft_generate_options generate;
    int32_t stop_tokens[FT_EVAL_MAX_STOP_TOKENS];
    int n_phases;               /* generation and loss passes, for progress */
    int phase;
    ft_stage_ranks ranks;       /* rank r takes samples r, r + ranks, ...; rank 0 gathers them */
    bool estimating;            /* read for `ftpipe estimate`, in the engine's process: no log */
    const char *device;         /* the backend's name once one ran */
    bool offload_param;         /* the weights stay in host memory, a unit uploaded as a pass uses it */
} ft_eval_run;

/* The inputs, parameters, tokenizer, stop tokens and the encoded samples
 * (estimating: without logging); 0, or -1 with the stage's message. */
int ft_evaluate_prepare(ft_eval_run *run);
/* What prepare read, and n_models outcomes. */
void ft_evaluate_free_run(ft_eval_run *run, ft_eval_outcome *outcomes, size_t n_models);
/* The model folder and its options: the adapted model, or the base. */
int ft_evaluate_model_options(const ft_eval_run *run, bool adapted, ft_model_options *options, const char **dir);
/* The forward passes of n_models models (the adapted one first), in
 * operations (train_work.h), the work evaluate_ops rates. */
int ft_evaluate_all_models_ops(const ft_eval_run *run, size_t n_models, double *ops);
/* The kind's estimate (evaluate_estimate.c). */
int ft_evaluate_estimate(ft_stage *stage, ft_stage_estimate *out);

#endif
