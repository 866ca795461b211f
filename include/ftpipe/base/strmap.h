/* strmap: a hash map from strings to indexes, for lookups by name among many
 * (10,000 stage targets, every file of a model). Keys are borrowed: they must
 * outlive the map. */
#ifndef FTPIPE_STRMAP_H
#define FTPIPE_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char **keys;
    size_t *values;
    size_t capacity;  /* a power of two, or 0 */
    size_t count;
} ft_strmap;

void ft_strmap_init(ft_strmap *map);
void ft_strmap_free(ft_strmap *map);
/* The value stored under key, or NULL. */
size_t *ft_strmap_get(const ft_strmap *map, const char *key);
/* Stores value under key unless present; returns the slot of the value now under key. */
size_t *ft_strmap_put(ft_strmap *map, const char *key, size_t value);
uint64_t ft_strmap_hash(const char *key);

#endif
