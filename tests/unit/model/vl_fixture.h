/* The vision-language parity fixtures (tests/fixtures/parity_vl, made by its
 * make_parity_vl.py): a tiny random Qwen2VLForConditionalGeneration
 * (qwen2_vl) or Qwen2_5_VLForConditionalGeneration (qwen2_5_vl) and one row of
 * text with two images of different sizes, read for the tests of the vision
 * towers, M-RoPE and the model. */
#ifndef FTPIPE_TEST_VL_FIXTURE_H
#define FTPIPE_TEST_VL_FIXTURE_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "fixture_tensors.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/safetensors.h"

#define VL_FIXTURES "tests/fixtures/parity_vl/qwen2_vl"
#define VL_TOLERANCE 1e-4

/* The fixture set vl_path and vl_open read: "qwen2_vl" or "qwen2_5_vl". */
static const char *vl_architecture = "qwen2_vl";

/* A file of the current set. Caller frees. */
static inline char *vl_path(const char *file)
{
    return ft_xasprintf("tests/fixtures/parity_vl/%s/%s", vl_architecture, file);
}

enum { VL_SEQ = 30, VL_IMAGES = 2, VL_MAX_SEQ = 64 };

typedef struct {
    ft_safetensors *set;
    int32_t tokens[VL_SEQ], targets[VL_SEQ], positions[VL_SEQ], segments[VL_SEQ];
    ft_stored_image images[VL_IMAGES];
} vl_fixture;

static inline ft_safetensors *vl_open(const char *file)
{
    return fixture_open("tests/fixtures/parity_vl", vl_architecture, file);
}

static inline const ft_tensor_view *vl_tensor(const ft_safetensors *set, const char *name, ft_dtype dtype, size_t count)
{
    const ft_tensor_view *view = set ? ft_safetensors_find(set, name) : NULL;
    bool fits = view && view->dtype == dtype && view->size_bytes == count * ft_dtype_size(dtype);
    CHECK(fits);
    return fits ? view : NULL;
}

/* false when the fixture is unreadable (the case has failed). */
static inline bool vl_fixture_open(vl_fixture *f)
{
    memset(f, 0, sizeof *f);
    f->set = vl_open("batch.safetensors");
    const ft_tensor_view *tokens = vl_tensor(f->set, "tokens", FT_DTYPE_I32, VL_SEQ);
    const ft_tensor_view *targets = vl_tensor(f->set, "targets", FT_DTYPE_I32, VL_SEQ);
    const ft_tensor_view *grids = vl_tensor(f->set, "grid_thw", FT_DTYPE_I32, 3 * VL_IMAGES);
    const ft_tensor_view *pixels = f->set ? ft_safetensors_find(f->set, "pixel_values") : NULL;
    if (!tokens || !targets || !grids || !pixels)
        return false;
    memcpy(f->tokens, tokens->data, sizeof f->tokens);
    memcpy(f->targets, targets->data, sizeof f->targets);
    const int32_t *grid = grids->data;
    const float *rows = pixels->data;
    for (int i = 0; i < VL_IMAGES; i++) {
        f->images[i] = (ft_stored_image){{0, 0}, grid[3 * i], grid[3 * i + 1], grid[3 * i + 2], rows};
        rows += (size_t)grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2] * pixels->shape[1];
    }
    for (int i = 0; i < VL_SEQ; i++)
        f->positions[i] = i;
    return true;
}

static inline void vl_fixture_close(vl_fixture *f) { ft_safetensors_close(f->set); }

/* The relative error (max |difference| over max |reference|) of actual against
 * the fixture's tensor `name`; 1e30 when it cannot be compared. */
static inline double vl_relative_error(const ft_safetensors *expected, const char *name, const float *actual, size_t count)
{
    double relative = fixture_relative_error(expected, name, actual, count);
    if (strncmp(name, "base_model.", 11) != 0) /* an adapter tensor's is summed up by the caller */
        printf("# %-28s relative error %.2e\n", name, relative);
    return relative;
}

#endif
