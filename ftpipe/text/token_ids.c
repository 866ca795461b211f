/* token_ids: see include/ftpipe/text/token_ids.h. */
#include "ftpipe/text/token_ids.h"

#include <stdlib.h>

#include "ftpipe/base/mem.h"

void ft_token_ids_push(ft_token_ids *ids, uint32_t id)
{
    if (ids->count == ids->capacity)
        ft_grow((void **)&ids->ids, &ids->capacity, ids->count + 1, sizeof *ids->ids);
    ids->ids[ids->count++] = id;
}

void ft_token_ids_free(ft_token_ids *ids)
{
    free(ids->ids);
    ids->ids = NULL;
    ids->count = ids->capacity = 0;
}
