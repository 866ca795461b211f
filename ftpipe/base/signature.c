/* signature: ed25519 through libcrypto's EVP interface. */
#include "ftpipe/base/signature.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

#define SIGNATURE_BYTES 64

struct ft_signature_key {
    EVP_PKEY *key;
};

int ft_signature_key_load(const char *pem_path, bool is_private, ft_signature_key **out)
{
    FILE *file = fopen(pem_path, "r");
    if (!file)
        return ft_error_errno("cannot read the %s key %s", is_private ? "signing" : "public", pem_path);
    EVP_PKEY *key = is_private ? PEM_read_PrivateKey(file, NULL, NULL, NULL) : PEM_read_PUBKEY(file, NULL, NULL, NULL);
    fclose(file);
    if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(key);
        return ft_error("%s is not an ed25519 %s key in PEM form (make one with `openssl genpkey -algorithm "
                        "ed25519 -out KEY.pem`%s)",
                        pem_path, is_private ? "private" : "public",
                        is_private ? "" : " and `openssl pkey -in KEY.pem -pubout -out PUBLIC.pem`");
    }
    *out = ft_xcalloc(1, sizeof **out);
    (*out)->key = key;
    return 0;
}

void ft_signature_key_free(ft_signature_key *key)
{
    if (!key)
        return;
    EVP_PKEY_free(key->key);
    free(key);
}

int ft_signature_sign(const ft_signature_key *key, const void *bytes, size_t length,
                      char out[FT_SIGNATURE_HEX_LENGTH + 1])
{
    unsigned char signature[SIGNATURE_BYTES];
    size_t signature_length = sizeof signature;
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    bool ok = context && EVP_DigestSignInit(context, NULL, NULL, NULL, key->key) == 1 &&
              EVP_DigestSign(context, signature, &signature_length, bytes, length) == 1 &&
              signature_length == SIGNATURE_BYTES;
    EVP_MD_CTX_free(context);
    if (!ok)
        return ft_error("cannot sign with the ed25519 key (is it a private key?)");
    for (size_t i = 0; i < SIGNATURE_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", signature[i]);
    return 0;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool ft_signature_verify(const ft_signature_key *key, const void *bytes, size_t length, const char *hex)
{
    if (strlen(hex) != FT_SIGNATURE_HEX_LENGTH)
        return false;
    unsigned char signature[SIGNATURE_BYTES];
    for (size_t i = 0; i < SIGNATURE_BYTES; i++) {
        int high = hex_digit(hex[2 * i]), low = hex_digit(hex[2 * i + 1]);
        if (high < 0 || low < 0)
            return false;
        signature[i] = (unsigned char)(high << 4 | low);
    }
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    bool valid = context && EVP_DigestVerifyInit(context, NULL, NULL, NULL, key->key) == 1 &&
                 EVP_DigestVerify(context, signature, sizeof signature, bytes, length) == 1;
    EVP_MD_CTX_free(context);
    return valid;
}
