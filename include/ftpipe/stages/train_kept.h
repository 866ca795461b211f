/* train_kept: the checkpoint-N folders a train stage keeps for its user
 * (save_strategy), as the HF Trainer leaves them in its output_dir.
 *
 * They are written to the work folder's kept/ while training runs (a rerun after
 * an interruption finds them there), and linked into the output at the end. */
#ifndef FTPIPE_TRAIN_KEPT_H
#define FTPIPE_TRAIN_KEPT_H

/* Removes all but the newest keep_newest checkpoint-N folders of dir (0: keeps
 * all), as the HF Trainer's save_total_limit. */
int ft_train_kept_prune(const char *dir, int keep_newest);

/* Makes out_dir/checkpoint-N for each of dir's, its files hard links to dir's
 * (the work folder and the output share a file system), so dir stays whole. */
int ft_train_kept_link(const char *dir, const char *out_dir);

#endif
