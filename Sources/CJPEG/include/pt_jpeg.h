// JPEG decoding through libjpeg-turbo for ptrain's image loaders. libjpeg reports a damaged file
// by calling an error handler that must not return; these functions catch that with setjmp (which
// Swift cannot do) and hand back a message instead, so a bad file is an error, never an abort.
#ifndef PT_JPEG_H
#define PT_JPEG_H

#include <stddef.h>

/// A JPEG's header: its size, the components it stores (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK) and
/// whether it is progressive.
typedef struct {
    int width, height, components, progressive;
} pt_jpeg_info;

/// Reads the header of the JPEG at `path`. 0 on success; otherwise a reason in `err`.
int pt_jpeg_probe(const char *path, pt_jpeg_info *info, char *err, size_t errlen);

/// Decodes the JPEG at `path` scaled by 1/`denom` (1, 2, 4 or 8: libjpeg's DCT scaling, each side
/// rounded up) as `channels` (1 grey, 3 RGB) bytes a pixel into `out`, which holds
/// `width * height * channels` bytes, the scaled size the caller expects. CMYK is converted to
/// RGB (then grey) here, as Pillow converts it. 0 on success; otherwise a reason in `err`.
int pt_jpeg_decode(const char *path, int denom, int channels, unsigned char *out, int width, int height,
                   char *err, size_t errlen);

#endif
