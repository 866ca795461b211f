/* Reading and comparing the tensors of a parity fixture (a safetensors file of
 * what transformers and PEFT computed), for the model tests. */
#ifndef FTPIPE_TEST_FIXTURE_TENSORS_H
#define FTPIPE_TEST_FIXTURE_TENSORS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"

/* FOLDER/ARCH/FILE of the fixtures, opened; NULL (the case failed, the error
 * printed) when it cannot be read. */
static inline ft_safetensors *fixture_open(const char *folder, const char *arch, const char *file)
{
    char *path = ft_xasprintf("%s/%s/%s", folder, arch, file);
    ft_safetensors *set = NULL;
    if (ft_safetensors_open(path, &set) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
    free(path);
    return set;
}

/* The tensor `name` as floats (int32 tensors copied as they are), its element
 * count in *count. Caller frees; a missing tensor fails the case and aborts. */
static inline float *fixture_floats(const ft_safetensors *set, const char *name, size_t *count)
{
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    CHECK(view != NULL);
    if (!view)
        abort();
    *count = view->size_bytes / 4;
    float *values = ft_xmalloc(view->size_bytes);
    if (view->dtype == FT_DTYPE_I32)
        memcpy(values, view->data, view->size_bytes);
    else
        CHECK_INT(ft_tensor_to_f32(view, values), 0);
    return values;
}

static inline double largest_difference(const float *a, const float *b, size_t count)
{
    double largest = 0.0;
    for (size_t i = 0; i < count; i++)
        largest = fmax(largest, fabs((double)a[i] - b[i]));
    return largest;
}

/* max |actual - the fixture's float32 tensor `name`| over max |that tensor|;
 * 1e30 when it is missing, of another size or type, or a value is NaN. */
static inline double fixture_relative_error(const ft_safetensors *set, const char *name, const float *actual,
                                            size_t count)
{
    const ft_tensor_view *view = set ? ft_safetensors_find(set, name) : NULL;
    if (!view || view->dtype != FT_DTYPE_F32 || view->size_bytes != count * sizeof(float)) {
        fprintf(stderr, "  %s: missing or of another size in the fixture\n", name);
        return 1e30;
    }
    const float *reference = view->data;
    double difference = 0.0, scale = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)actual[i] - reference[i]);
        if (isnan(d))
            return 1e30;
        difference = fmax(difference, d);
        scale = fmax(scale, fabs((double)reference[i]));
    }
    return scale > 0.0 ? difference / scale : difference;
}

#endif
