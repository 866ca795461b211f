/* pretokenizer: the tokenizer's steps before BPE, on UTF-8 text (validated
 * with base/utf8): NFC normalization (utf8proc), the split into words by the Split regex (PCRE2
 * with JIT), and the GPT-2 byte-level alphabet that tokenizer.json writes byte
 * strings in. Part of the tokenizer (include/ftpipe/text/tokenizer.h). */
#ifndef FTPIPE_PRETOKENIZER_H
#define FTPIPE_PRETOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/strbuf.h"

/* The byte-level alphabet writes every byte as one printable code point
 * (printable Latin-1 bytes as themselves, the others from U+0100 on). The byte
 * a code point stands for, or -1 when it is outside the alphabet. */
int ft_byte_level_byte(uint32_t codepoint);
/* The raw bytes of a token written in that alphabet (into raw, reset first);
 * false when some character is outside it. */
bool ft_byte_level_to_raw(const char *text, size_t length, ft_strbuf *raw);

/* Whether NFC leaves text as it is (a fast check: true for most text). */
bool ft_nfc_is_unchanged(const char *text, size_t length);
/* Appends the NFC form of valid UTF-8 text to out. */
int ft_nfc_append(const char *text, size_t length, ft_strbuf *out);

/* Splits text into words as the Split pre-tokenizer with behavior "Isolated"
 * does: each regex match is a word, and so is each stretch between matches. */
typedef struct ft_word_splitter ft_word_splitter;
/* Per-thread matching state of one splitter. */
typedef struct ft_word_matcher ft_word_matcher;

/* pattern is a regex (Oniguruma syntax, as tokenizer.json writes it) or, with
 * literal, a plain string. */
int ft_word_splitter_new(const char *pattern, bool literal, ft_word_splitter **out);
void ft_word_splitter_free(ft_word_splitter *splitter);

ft_word_matcher *ft_word_matcher_new(const ft_word_splitter *splitter);
void ft_word_matcher_free(ft_word_matcher *matcher);

/* Starts splitting valid UTF-8 text (kept by reference until the last word). */
void ft_word_matcher_start(ft_word_matcher *matcher, const char *text, size_t length);
/* The next word as [*start, *end): 1; 0 when the text is done; -1 on a regex error. */
int ft_word_matcher_next(ft_word_matcher *matcher, size_t *start, size_t *end);

#endif
