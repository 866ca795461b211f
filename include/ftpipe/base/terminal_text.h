/* terminal_text: text from untrusted places (target names, file names, server
 * answers) made safe to print: control bytes other than newline and tab, and
 * bytes that are not valid UTF-8, are written as \xNN, so that a name cannot
 * move the cursor, recolour the terminal or hide what follows it. */
#ifndef FTPIPE_TERMINAL_TEXT_H
#define FTPIPE_TERMINAL_TEXT_H

/* An escaped copy of text (unchanged when it is already printable). Caller frees. */
char *ft_terminal_text(const char *text);

#endif
