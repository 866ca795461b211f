/* message: one turn of a conversation, as datasets hold it and chat templates
 * render it. */
#ifndef FTPIPE_MESSAGE_H
#define FTPIPE_MESSAGE_H

typedef enum { FT_ROLE_SYSTEM, FT_ROLE_USER, FT_ROLE_ASSISTANT } ft_role;

typedef struct {
    ft_role role;
    const char *content;
} ft_message;

#endif
