/* tokenizer_json: small reads of tokenizer.json's objects. */
#include "ftpipe/text/tokenizer_json.h"

const char *ft_tokenizer_json_type(const json_t *object)
{
    const char *type = json_string_value(json_object_get(object, "type"));
    return type ? type : "(none)";
}

bool ft_tokenizer_json_flag(const json_t *object, const char *key, bool fallback)
{
    const json_t *value = json_object_get(object, key);
    return json_is_boolean(value) ? json_is_true(value) : fallback;
}
