/* work_dirs: the work folders of a build's stages (.ftpipe/work/KEY/): given to a
 * stage as it starts, and disposed of once it finished and was published.
 *
 * A finished stage's folder emptied to its out/ is reused: renamed to the next
 * stage's, so thousands of small stages do not each create and delete two
 * folders (where the file system is mounted with discard, a delete costs a trim).
 * A folder holding more (checkpoints a rerun would resume from) is removed only
 * after the batch that recorded its stage is committed: a kill -9 before that
 * reruns the stage, which must find it whole. Spares left at the end are removed;
 * a killed build leaves at most a few, which `ftpipe gc` removes (no key names
 * them). */
#ifndef FTPIPE_WORK_DIRS_H
#define FTPIPE_WORK_DIRS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ft_work_dirs ft_work_dirs;

/* For the workspace's .ftpipe folder; keeps up to max_spares emptied folders. */
ft_work_dirs *ft_work_dirs_new(const char *state_dir, size_t max_spares);
/* Readies work_dir for a starting stage: a spare renamed to it when it does not
 * exist yet (a rename onto a folder with content fails), else its own out/
 * emptied (what it holds beside out/ is kept for resuming). */
int ft_work_dirs_prepare(ft_work_dirs *dirs, const char *work_dir);
/* Takes a finished, published stage's work folder (and the string). */
void ft_work_dirs_retire(ft_work_dirs *dirs, char *work_dir);
/* After a batch's commit: removes the folders retired before it when the commit
 * made their stages durable (committed), else forgets them (a rerun resumes them). */
void ft_work_dirs_committed(ft_work_dirs *dirs, bool committed);
/* Removes the spares; NULL is fine. */
void ft_work_dirs_free(ft_work_dirs *dirs);

#endif
