/* publish: how a stage's output reaches the workspace — stored in the cache
 * after a run, then linked in at its target path, read-only — and the record
 * of what each workspace target holds. A path ftpipe did not make is never
 * replaced (unless a run killed before its record was committed placed it: it holds
 * exactly the output, or only hard links of cache objects): the stage fails saying
 * so, its output safe in the cache. */
#ifndef FTPIPE_PUBLISH_H
#define FTPIPE_PUBLISH_H

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/workspace.h"

/* After a successful run: hashes <work_dir>/out/<name>, stores it in the cache
 * under the plan's key (durable at the next ft_cache_sync, which the build runs
 * before it commits the records of a batch of stages), links it in and keeps the log
 * (its new path in *kept_log). The work folder is left, emptied of both, for the
 * caller to remove or reuse. Sets plan->output_hash. */
int ft_publish_output(ft_workspace *workspace, const ft_node *node, ft_plan *plan, const char *work_dir,
                      char **kept_log);

/* Links a cached output (plan->manifest) into the workspace and records a run. */
int ft_publish_restore(ft_workspace *workspace, const ft_node *node, ft_plan *plan);

#endif
