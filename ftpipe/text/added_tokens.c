/* added_tokens: a byte trie of the tokens' texts, and the walk through text. */
#include "ftpipe/text/added_tokens.h"

#include <stdlib.h>
#include <utf8proc.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/utf8.h"

typedef struct {
    uint32_t first_child, next_sibling; /* node indexes; 0 for none (node 0 is the root) */
    int32_t token;                      /* index into tokens, or -1 */
    uint8_t byte;
} trie_node;

typedef struct {
    uint32_t id;
    bool single_word, lstrip, rstrip;
} added_token;

struct ft_added_tokens {
    trie_node *nodes;
    size_t n_nodes, nodes_capacity;
    bool starts[256]; /* first bytes of the tokens, to skip quickly through text */
    added_token *tokens;
    size_t n_tokens, tokens_capacity;
};

ft_added_tokens *ft_added_tokens_new(void)
{
    ft_added_tokens *tokens = ft_xcalloc(1, sizeof *tokens);
    ft_grow((void **)&tokens->nodes, &tokens->nodes_capacity, 1, sizeof *tokens->nodes);
    tokens->nodes[0] = (trie_node){0, 0, -1, 0};
    tokens->n_nodes = 1;
    return tokens;
}

void ft_added_tokens_free(ft_added_tokens *tokens)
{
    if (!tokens)
        return;
    free(tokens->nodes);
    free(tokens->tokens);
    free(tokens);
}

size_t ft_added_tokens_count(const ft_added_tokens *tokens) { return tokens->n_tokens; }

static uint32_t child_of(const ft_added_tokens *tokens, uint32_t node, uint8_t byte)
{
    uint32_t child = tokens->nodes[node].first_child;
    while (child && tokens->nodes[child].byte != byte)
        child = tokens->nodes[child].next_sibling;
    return child;
}

void ft_added_tokens_add(ft_added_tokens *tokens, const char *text, size_t length, uint32_t id, bool single_word,
                         bool lstrip, bool rstrip)
{
    uint32_t node = 0;
    for (size_t i = 0; i < length; i++) {
        uint32_t child = child_of(tokens, node, (uint8_t)text[i]);
        if (!child) {
            ft_grow((void **)&tokens->nodes, &tokens->nodes_capacity, tokens->n_nodes + 1, sizeof *tokens->nodes);
            child = (uint32_t)tokens->n_nodes++;
            tokens->nodes[child] = (trie_node){0, tokens->nodes[node].first_child, -1, (uint8_t)text[i]};
            tokens->nodes[node].first_child = child;
        }
        node = child;
    }
    ft_grow((void **)&tokens->tokens, &tokens->tokens_capacity, tokens->n_tokens + 1, sizeof *tokens->tokens);
    tokens->tokens[tokens->n_tokens] = (added_token){id, single_word, lstrip, rstrip};
    tokens->nodes[node].token = (int32_t)tokens->n_tokens++;
    tokens->starts[(uint8_t)text[0]] = true;
}

int64_t ft_added_tokens_id(const ft_added_tokens *tokens, const char *text, size_t length)
{
    uint32_t node = 0;
    for (size_t i = 0; i < length && (node = child_of(tokens, node, (uint8_t)text[i])); i++)
        ;
    if (length == 0 || node == 0 || tokens->nodes[node].token < 0)
        return -1;
    return tokens->tokens[tokens->nodes[node].token].id;
}

/* The longest token at text[0..]: its index, and its length in *match_length; or -1. */
static int32_t longest_at(const ft_added_tokens *tokens, const char *text, size_t length, size_t *match_length)
{
    int32_t best = -1;
    uint32_t node = 0;
    for (size_t i = 0; i < length; i++) {
        node = child_of(tokens, node, (uint8_t)text[i]);
        if (!node)
            break;
        if (tokens->nodes[node].token >= 0) {
            best = tokens->nodes[node].token;
            *match_length = i + 1;
        }
    }
    return best;
}

/* Unicode White_Space (the `\s` of the regex engine `tokenizers` uses here). */
static bool is_white_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Unicode word characters (`\w`): letters, marks, digits, connector punctuation, joiners. */
static bool is_word_character(int32_t c)
{
    if (c < 0)
        return false;
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    utf8proc_category_t category = utf8proc_category(c);
    return (category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_NL) ||
           category == UTF8PROC_CATEGORY_PC || c == 0x200C || c == 0x200D;
}

int ft_added_tokens_split(const ft_added_tokens *tokens, const char *text, size_t length,
                          ft_stretch_encoder encode_stretch, void *context, ft_token_ids *out)
{
    size_t stretch_start = 0, position = 0;
    while (position < length) {
        if (!tokens->starts[(unsigned char)text[position]]) {
            position++;
            continue;
        }
        size_t match_length = 0;
        int32_t found = longest_at(tokens, text + position, length - position, &match_length);
        if (found < 0) {
            position++;
            continue;
        }
        const added_token *token = &tokens->tokens[found];
        size_t start = position, stop = position + match_length, before;
        position = stop;
        if (token->single_word) {
            size_t after = stop;
            bool word_before = start > 0 && is_word_character(ft_utf8_previous(text, start, &before));
            bool word_after = stop < length && is_word_character(ft_utf8_next(text, length, &after));
            if (word_before || word_after)
                continue;
        }
        if (token->lstrip) /* white space before it, back to the previous token at most */
            while (start > stretch_start && is_white_space(ft_utf8_previous(text, start, &before)))
                start = before;
        if (token->rstrip) {
            size_t after = stop;
            while (stop < length && is_white_space(ft_utf8_next(text, length, &after)))
                stop = after;
            position = stop;
        }
        if (start > stretch_start) {
            int rc = encode_stretch(context, text + stretch_start, start - stretch_start);
            if (rc < 0)
                return rc;
        }
        ft_token_ids_push(out, token->id);
        stretch_start = stop;
    }
    if (length > stretch_start)
        return encode_stretch(context, text + stretch_start, length - stretch_start);
    return 0;
}
