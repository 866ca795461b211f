/* pretraining_encoding: texts + EOS, concatenated and cut into blocks. */
#include "ftpipe/text/pretraining_encoding.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

int ft_encode_pretraining(const ft_tokenizer *tokenizer, const ft_conversation *texts, size_t count,
                          const char *eos_token, size_t block_len, ft_encoded_sample **blocks, size_t *n_blocks,
                          size_t *n_tokens)
{
    *blocks = NULL;
    *n_blocks = 0;
    *n_tokens = 0;
    if (!eos_token)
        return ft_error("pretraining appends EOS to each text, but the tokenizer has no eos_token in its "
                        "tokenizer_config.json and the template names none");
    if (block_len == 0)
        return ft_error("pretraining needs blocks of at least one token (cutoff_len)");
    ft_token_ids all = {0};
    ft_strbuf text;
    ft_strbuf_init(&text);
    int status = 0;
    for (size_t i = 0; i < count && status == 0; i++) {
        const ft_conversation *record = &texts[i];
        if (record->count != 1) {
            status = ft_error("%s: record %zu is a conversation, not a text: pretraining reads one text per record",
                              record->file, record->record);
            break;
        }
        /* one string, as LLaMA-Factory tokenizes content + eos_token */
        ft_strbuf_reset(&text);
        ft_strbuf_puts(&text, record->messages[0].content);
        ft_strbuf_puts(&text, eos_token);
        status = ft_tokenizer_encode(tokenizer, text.data, text.length, &all);
    }
    ft_strbuf_free(&text);
    if (status != 0) {
        ft_token_ids_free(&all);
        return -1;
    }
    *n_tokens = all.count;
    size_t n = all.count / block_len;
    ft_encoded_sample *out = ft_xcalloc(n ? n : 1, sizeof *out);
    for (size_t b = 0; b < n; b++) {
        out[b].ids = ft_xmalloc(block_len * sizeof *out[b].ids);
        memcpy(out[b].ids, all.ids + b * block_len, block_len * sizeof *out[b].ids);
        out[b].loss_mask = ft_xmalloc(block_len);
        memset(out[b].loss_mask, 1, block_len);
        out[b].n_tokens = out[b].full_tokens = block_len;
    }
    ft_token_ids_free(&all);
    *blocks = out;
    *n_blocks = n;
    return 0;
}
