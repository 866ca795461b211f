/* stage_backend: the compute backend a stage's `backend = auto|cpu|cuda` and
 * `threads` parameters ask for (train, evaluate). */
#ifndef FTPIPE_STAGE_BACKEND_H
#define FTPIPE_STAGE_BACKEND_H

#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/engine/stage.h"

/* auto is cuda when a GPU is found, else cpu. NULL with the error set when the
 * backend cannot be made. `doing` ("training") words the hint logged when a GPU
 * is used by a stage that reserved none (gpus = 0). */
ft_backend *ft_stage_backend(ft_stage *stage, const char *doing);

/* The same for rank `rank` of `ranks` on this host: the cuda backend on the
 * rank's GPU, the cpu backend with `threads = 0` sharing the cores among the
 * ranks. */
ft_backend *ft_stage_backend_for_rank(ft_stage *stage, const char *doing, int rank, int ranks);

/* The memory free on a GPU a cuda stage may be given: the least of the
 * visible GPUs' (NVML, which starts no CUDA in this process: the engine
 * estimates stages before it forks them), or FTPIPE_GPU_MEMORY's; 0: unknown. Asked once a process: every cuda stage
 * of a run is estimated against the same figure. */
uint64_t ft_stage_gpu_free_bytes(void);

#endif
