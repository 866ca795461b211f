/* strmap: open addressing with linear probing, grown at half full. */
#include "ftpipe/base/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"

uint64_t ft_strmap_hash(const char *key)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a: names are short */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211u;
    return h;
}

void ft_strmap_init(ft_strmap *map) { memset(map, 0, sizeof *map); }

void ft_strmap_free(ft_strmap *map)
{
    free(map->keys);
    free(map->values);
    memset(map, 0, sizeof *map);
}

static size_t find_slot(const char *const *keys, size_t capacity, const char *key)
{
    size_t mask = capacity - 1;
    size_t slot = ft_strmap_hash(key) & mask;
    while (keys[slot] && strcmp(keys[slot], key) != 0)
        slot = (slot + 1) & mask;
    return slot;
}

size_t *ft_strmap_get(const ft_strmap *map, const char *key)
{
    if (map->capacity == 0)
        return NULL;
    size_t slot = find_slot(map->keys, map->capacity, key);
    return map->keys[slot] ? &map->values[slot] : NULL;
}

static void grow(ft_strmap *map)
{
    size_t capacity = map->capacity ? map->capacity * 2 : 64;
    const char **keys = ft_xcalloc(capacity, sizeof *keys);
    size_t *values = ft_xcalloc(capacity, sizeof *values);
    for (size_t i = 0; i < map->capacity; i++) {
        if (!map->keys[i])
            continue;
        size_t slot = find_slot(keys, capacity, map->keys[i]);
        keys[slot] = map->keys[i];
        values[slot] = map->values[i];
    }
    free(map->keys);
    free(map->values);
    map->keys = keys;
    map->values = values;
    map->capacity = capacity;
}

size_t *ft_strmap_put(ft_strmap *map, const char *key, size_t value)
{
    if (2 * (map->count + 1) > map->capacity)
        grow(map);
    size_t slot = find_slot(map->keys, map->capacity, key);
    if (!map->keys[slot]) {
        map->keys[slot] = key;
        map->values[slot] = value;
        map->count++;
    }
    return &map->values[slot];
}
