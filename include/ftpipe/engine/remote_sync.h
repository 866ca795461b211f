/* remote_sync: the remote cache — finished stages shared between workspaces.
 *
 * A stage's result goes to the remote as its objects, each named by its SHA-256
 * ("cas/<sha256>"), and then, last, its entry ("ac/<sha256 of the stage key>"):
 *
 *   ftpipe remote entry 1
 *   key <stage key>
 *   object <xxh3-128> <sha256> <size>      one per distinct file content
 *   manifest
 *   <the output manifest's canonical text>
 *
 * so an entry is visible only once everything it names is stored. With a signing
 * key the entry ends in "signature ed25519 <hex>" over all the text before it;
 * with a public key a restore refuses an entry that is unsigned or whose
 * signature does not verify. A restore
 * downloads the objects the local cache lacks, checks each one's size, SHA-256
 * and XXH3-128 before it enters the cache, and stores the manifest last; one
 * bad object refuses the whole entry (the stage is built here instead, and the
 * next push replaces the bad object).
 *
 * During a run the remote is a help, never a cause of failure: the first time
 * it is unreachable or failing, one warning says so and the run goes on without
 * it. Refused credentials are an error. `ftpipe push` and `pull` are strict: any
 * failure is an error. */
#ifndef FTPIPE_REMOTE_SYNC_H
#define FTPIPE_REMOTE_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/engine/cache.h"
#include "ftpipe/engine/progress.h"

typedef struct ft_remote_sync ft_remote_sync;

typedef struct {
    const char *url;   /* FTPIPE_REMOTE, --remote or .REMOTE */
    bool writable;     /* FTPIPE_REMOTE_MODE=read-write (the default) */
    bool strict;       /* push/pull: every failure is an error */
    int transfers;     /* objects at once; 0: 8 */
    const char *signing_key_path; /* FTPIPE_REMOTE_KEY: ed25519 private key (PEM) that signs pushed entries */
    const char *public_key_path;  /* FTPIPE_REMOTE_PUBLIC_KEY: restores accept only entries it verifies
                                     (the signing key's public half when only that is given) */
    ft_progress *progress; /* where warnings go */
} ft_remote_sync_options;

/* Reads FTPIPE_REMOTE_MODE ("read" or "read-write"); -1 naming the value when it is neither. */
int ft_remote_sync_mode_writable(bool *writable);

int ft_remote_sync_open(const ft_remote_sync_options *options, ft_remote_sync **out);
void ft_remote_sync_close(ft_remote_sync *sync);
const char *ft_remote_sync_url(const ft_remote_sync *sync);
bool ft_remote_sync_writable(const ft_remote_sync *sync);

/* Whether the remote holds key's entry: 1, 0, or -1 (strict, or refused credentials). */
int ft_remote_sync_has(ft_remote_sync *sync, const char *key);

/* Fetches key's entry and objects into the cache, verified. 1 and the manifest
 * when restored; 0 when the remote lacks it, cannot be reached (warned once) or
 * sent something that fails verification (warned, naming target and object);
 * -1 on refused credentials or, when strict, any failure. */
int ft_remote_sync_restore(ft_remote_sync *sync, ft_cache *cache, const char *key, const char *target,
                           ft_manifest **out);

/* Uploads key's objects the remote lacks (HEAD decides), then the entry. 0 when
 * done or, not strict, skipped after a warning; -1 as for restore. sent_bytes
 * (may be NULL) counts what went over the wire. */
int ft_remote_sync_push(ft_remote_sync *sync, ft_cache *cache, const char *key, const char *target,
                        const ft_manifest *manifest, uint64_t *sent_bytes);

#endif
