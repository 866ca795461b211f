/* dataset_refusals: the columns LLaMA-Factory knows that make data unusable for
 * supervised fine-tuning here (tools, videos, audios, chosen, rejected, kto_tag),
 * and the error for each, saying why. Never advice to drop the column: that would
 * train on wrong targets. dataset_info.json entries and records read directly are
 * refused alike. Images are read for vision-language templates; the dataset
 * reader refuses them, with this module's message for "images", elsewhere. */
#ifndef FTPIPE_DATASET_REFUSALS_H
#define FTPIPE_DATASET_REFUSALS_H

/* NULL-terminated; "images" is not among them. */
const char *const *ft_dataset_refused_columns(void);
/* Sets the error for column (what: "dataset 'NAME'", "the record") and returns -1. */
int ft_dataset_refuse_column(const char *what, const char *column);

#endif
