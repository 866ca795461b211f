/* dataset_refusals: data that would mis-train, refused with the reason. */
#include "ftpipe/formats/dataset_refusals.h"

#include <stddef.h>
#include <string.h>

#include "ftpipe/base/error.h"

static const char *const refused_columns[] = {"tools", "videos", "audios", "chosen", "rejected", "kto_tag", NULL};

const char *const *ft_dataset_refused_columns(void) { return refused_columns; }

int ft_dataset_refuse_column(const char *what, const char *column)
{
    if (strcmp(column, "tools") == 0)
        return ft_error("%s has \"tools\", tool (function) definitions, which ftpipe's chat templates do not render "
                        "yet; trained without them, the conversations would teach tool calls against definitions the "
                        "model never sees, so tool-calling data cannot be used for supervised fine-tuning yet",
                        what);
    if (strcmp(column, "images") == 0 || strcmp(column, "videos") == 0 || strcmp(column, "audios") == 0)
        return ft_error("%s is multimodal (\"%s\"): ftpipe reads images only in the tokenize stage with a "
                        "vision-language template (qwen2_vl; llava or llama3 with a LLaVA model), and no videos or audio; "
                        "the text alone would train on "
                        "the literal <image>/<video>/<audio> placeholders, so it is not usable for supervised "
                        "fine-tuning here",
                        what, column);
    if (strcmp(column, "kto_tag") == 0)
        return ft_error("%s is KTO data: \"kto_tag\" labels answers desirable or undesirable, and supervised "
                        "fine-tuning would train on the undesirable ones as targets; it is not usable for supervised "
                        "fine-tuning (ftpipe has no KTO stage)",
                        what);
    return ft_error("%s is preference data (\"%s\"): its answers come in chosen/rejected pairs for DPO or reward "
                    "modelling; it is not usable for supervised fine-tuning (ftpipe has no preference stage)",
                    what, column);
}
