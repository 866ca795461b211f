/* dataset_inputs: the datasets a stage's inputs and its `format` and `dataset`
 * parameters name, read into one dataset. The tokenize and evaluate kinds
 * take data the same way: dataset files or folders of them given directly
 * (read as `format` says), or one folder with LLaMA-Factory's
 * dataset_info.json whose entries `dataset` names. */
#ifndef FTPIPE_DATASET_INPUTS_H
#define FTPIPE_DATASET_INPUTS_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/formats/dataset.h"

typedef struct {
    const char *format;                 /* "alpaca", "sharegpt", "auto", or "text" (pretraining: every source) */
    const char *const *dataset_words;   /* `dataset = a,b c`: names separated by commas or blanks */
    size_t n_dataset_words;
    ft_on_error on_error;
    size_t max_samples;                 /* LLaMA-Factory's: the first N records of each dataset; 0: all */
    bool read_images;                   /* ft_dataset's: records' images read, not refused */
} ft_dataset_input_options;

/* Appends the records of paths[0..count), in order. An error names the input
 * and what to do (a dataset_info.json folder without `dataset =` lists its
 * datasets). Skipped records are counted in dataset, as ft_dataset_read does. */
int ft_dataset_read_inputs(const char *const *paths, size_t count, const ft_dataset_input_options *options,
                           ft_dataset *dataset);

#endif
