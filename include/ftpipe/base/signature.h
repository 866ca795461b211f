/* signature: ed25519 signatures (libcrypto) over byte strings, with keys read
 * from PEM files as `openssl genpkey -algorithm ed25519` writes them. The remote
 * cache signs its entries with them. */
#ifndef FTPIPE_SIGNATURE_H
#define FTPIPE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

#define FT_SIGNATURE_HEX_LENGTH 128

typedef struct ft_signature_key ft_signature_key;

/* A private key (can sign and verify) or a public key (can verify); -1 naming
 * the file when it cannot be read or is no ed25519 key. */
int ft_signature_key_load(const char *pem_path, bool is_private, ft_signature_key **out);
void ft_signature_key_free(ft_signature_key *key);

/* 128 lowercase hex digits and a NUL into out. */
int ft_signature_sign(const ft_signature_key *key, const void *bytes, size_t length,
                      char out[FT_SIGNATURE_HEX_LENGTH + 1]);
/* Whether hex is key's signature of bytes. */
bool ft_signature_verify(const ft_signature_key *key, const void *bytes, size_t length, const char *hex);

#endif
