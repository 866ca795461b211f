/* record_answer: a run with nothing to do (and -n), and `ftpipe status`, answered
 * from the last complete build's record (up_to_date.h) alone: no rules, no parse,
 * no graph, no plan. The program `ftpipe` (cli/front_main.c) asks it first and
 * links little else, so such an answer loads none of the libraries stages use;
 * ftpipe-full asks it too when it was not asked already. */
#ifndef FTPIPE_RECORD_ANSWER_H
#define FTPIPE_RECORD_ANSWER_H

#include <stdbool.h>

#include "ftpipe/engine/session.h"

/* Set by ftpipe when it hands a command it could not answer to ftpipe-full, so
 * that the record is not read twice; ftpipe-full removes it at its start. */
#define FT_RECORD_CHECKED_VARIABLE "FTPIPE_RECORD_CHECKED"

/* For a run asking `question` (ft_up_to_date_question): true when the record
 * answers it, after printing "nothing to do". */
bool ft_record_answer_run(const ft_invocation *invocation, const char *question);

/* `ftpipe status` with no arguments: true when the record answers (every stage
 * up to date), after printing each stage's lines and last run. */
bool ft_record_answer_status(const ft_invocation *invocation);

#endif
