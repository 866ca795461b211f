/* Tests of signature: ed25519 keys from PEM files, signatures that verify only
 * with the right key over the same bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/signature.h"

static char *temporary_dir;

/* KEY.pem and KEY.pub.pem, made by the openssl command as a user would. */
static void make_key(const char *name)
{
    char *command = ft_xasprintf("openssl genpkey -algorithm ed25519 -out %s/%s.pem 2>/dev/null && "
                                 "openssl pkey -in %s/%s.pem -pubout -out %s/%s.pub.pem 2>/dev/null",
                                 temporary_dir, name, temporary_dir, name, temporary_dir, name);
    CHECK_INT(system(command), 0);
    free(command);
}

static ft_signature_key *load(const char *name, bool is_private)
{
    char *path = ft_xasprintf("%s/%s", temporary_dir, name);
    ft_signature_key *key = NULL;
    CHECK_INT(ft_signature_key_load(path, is_private, &key), 0);
    free(path);
    return key;
}

TEST(a_signature_verifies_with_its_key_only)
{
    make_key("one");
    make_key("two");
    ft_signature_key *one = load("one.pem", true), *one_public = load("one.pub.pem", false);
    ft_signature_key *two_public = load("two.pub.pem", false);
    const char text[] = "ftpipe remote entry 1\nkey 0123\n";
    char hex[FT_SIGNATURE_HEX_LENGTH + 1] = "";
    CHECK_INT(ft_signature_sign(one, text, strlen(text), hex), 0);
    CHECK_INT(strlen(hex), FT_SIGNATURE_HEX_LENGTH);
    CHECK(ft_signature_verify(one_public, text, strlen(text), hex));
    CHECK(ft_signature_verify(one, text, strlen(text), hex));
    CHECK(!ft_signature_verify(two_public, text, strlen(text), hex));
    CHECK(!ft_signature_verify(one_public, text, strlen(text) - 1, hex));
    hex[10] = hex[10] == '0' ? '1' : '0';
    CHECK(!ft_signature_verify(one_public, text, strlen(text), hex));
    CHECK(!ft_signature_verify(one_public, text, strlen(text), "abc"));
    ft_signature_key_free(one);
    ft_signature_key_free(one_public);
    ft_signature_key_free(two_public);
}

TEST(files_that_are_no_ed25519_keys_are_refused)
{
    char *path = ft_xasprintf("%s/rsa.pem", temporary_dir);
    char *command = ft_xasprintf("openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 -out %s 2>/dev/null",
                                 path);
    CHECK_INT(system(command), 0);
    ft_signature_key *key = NULL;
    CHECK_INT(ft_signature_key_load(path, true, &key), -1);
    CHECK(strstr(ft_error_message(), "is not an ed25519 private key in PEM form") != NULL);
    char *missing = ft_xasprintf("%s/missing.pem", temporary_dir);
    CHECK_INT(ft_signature_key_load(missing, false, &key), -1);
    CHECK(strstr(ft_error_message(), "cannot read the public key") != NULL);
    free(missing);
    free(command);
    free(path);
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-signature.XXXXXX";
    temporary_dir = mkdtemp(pattern);
    RUN(a_signature_verifies_with_its_key_only);
    RUN(files_that_are_no_ed25519_keys_are_refused);
    ft_remove_tree(temporary_dir);
    return check_done();
}
