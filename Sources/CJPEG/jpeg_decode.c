#include "pt_jpeg.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

// libjpeg's error manager, extended with a place to jump back to and the one warning that is an
// error here: the file ends before the image does (libjpeg would fill the rest with grey).
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *err;
    size_t errlen;
    int ended_early;
} pt_error;

static void on_error(j_common_ptr c) {
    pt_error *e = (pt_error *)c->err;
    char text[JMSG_LENGTH_MAX];
    (*c->err->format_message)(c, text);
    snprintf(e->err, e->errlen, "%s", text);
    longjmp(e->jump, 1);
}

static void on_message(j_common_ptr c, int level) {
    pt_error *e = (pt_error *)c->err;
    // Level -1 is a warning about damaged data; JWRN_JPEG_EOF means the data stopped early.
    if (level == -1 && c->err->msg_code == JWRN_JPEG_EOF) e->ended_early = 1;
}

// Points `d`'s error handling at `e`, whose messages go to `err`. The caller then sets `e->jump`
// (setjmp must run in the frame the jump returns to).
static void catch_errors(struct jpeg_decompress_struct *d, pt_error *e, char *err, size_t errlen) {
    memset(e, 0, sizeof *e);
    d->err = jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error;
    e->pub.emit_message = on_message;
    e->err = err;
    e->errlen = errlen;
}

// Reads the header of the file `f` into `d` (may jump to `d`'s error handler).
static void read_header(struct jpeg_decompress_struct *d, FILE *f) {
    jpeg_create_decompress(d);
    jpeg_stdio_src(d, f);
    jpeg_read_header(d, TRUE);
}

// Opens `path` for libjpeg's stdio reader; on failure leaves a reason and returns NULL.
static FILE *open_jpeg(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) snprintf(err, errlen, "cannot open: %s", strerror(errno));
    return f;
}

int pt_jpeg_probe(const char *path, pt_jpeg_info *info, char *err, size_t errlen) {
    FILE *f = open_jpeg(path, err, errlen);
    if (!f) return 1;
    struct jpeg_decompress_struct d;
    pt_error e;
    catch_errors(&d, &e, err, errlen);
    if (setjmp(e.jump)) {
        jpeg_destroy_decompress(&d);
        fclose(f);
        return 1;
    }
    read_header(&d, f);
    info->width = (int)d.image_width;
    info->height = (int)d.image_height;
    info->components = d.num_components;
    info->progressive = jpeg_has_multiple_scans(&d) ? 1 : 0;
    jpeg_destroy_decompress(&d);
    fclose(f);
    return 0;
}

// Pillow's integer rounding of a * b / 255 and its luma (ITU-R 601 weights in 16-bit fixed point).
static inline int muldiv255(int a, int b) { int t = a * b + 128; return ((t >> 8) + t) >> 8; }
static inline unsigned char luma(int r, int g, int b) { return (unsigned char)((19595 * r + 38470 * g + 7471 * b + 32768) >> 16); }

// One decoded row to `channels` bytes a pixel. CMYK as Pillow converts it: stored inverted (the
// convention Adobe's files follow and Pillow assumes), R = (255 - K) - C(255 - K)/255. Colour to
// grey as Pillow's convert("L") does.
static void convert_row(const unsigned char *in, unsigned char *out, int width, int channels, int cmyk) {
    for (int x = 0; x < width; x++) {
        int r, g, b;
        if (cmyk) {
            int nk = in[4 * x + 3];  // inverted: 255 - K
            r = nk - muldiv255(255 - in[4 * x], nk);
            g = nk - muldiv255(255 - in[4 * x + 1], nk);
            b = nk - muldiv255(255 - in[4 * x + 2], nk);
        } else {
            r = in[3 * x]; g = in[3 * x + 1]; b = in[3 * x + 2];
        }
        if (channels == 3) {
            out[3 * x] = (unsigned char)r; out[3 * x + 1] = (unsigned char)g; out[3 * x + 2] = (unsigned char)b;
        } else {
            out[x] = luma(r, g, b);
        }
    }
}

int pt_jpeg_decode(const char *path, int denom, int channels, unsigned char *out, int width, int height,
                   char *err, size_t errlen) {
    FILE *f = open_jpeg(path, err, errlen);
    if (!f) return 1;
    struct jpeg_decompress_struct d;
    pt_error e;
    unsigned char *volatile row = NULL;
    catch_errors(&d, &e, err, errlen);
    if (setjmp(e.jump)) {
        free(row);
        jpeg_destroy_decompress(&d);
        fclose(f);
        return 1;
    }
    read_header(&d, f);
    int cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    int grey = d.jpeg_color_space == JCS_GRAYSCALE;
    // Decoded straight into place when no conversion is needed; else a row at a time through `row`.
    int direct = !cmyk && (grey || channels == 3);
    d.out_color_space = cmyk ? JCS_CMYK : grey && channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    d.scale_num = 1;
    d.scale_denom = (unsigned)denom;
    jpeg_start_decompress(&d);
    if ((int)d.output_width != width || (int)d.output_height != height) {
        snprintf(err, errlen, "decodes to %ux%u at 1/%d scale, expected %dx%d", d.output_width, d.output_height, denom,
                 width, height);
        jpeg_destroy_decompress(&d);
        fclose(f);
        return 1;
    }
    if (!direct) {
        row = malloc((size_t)width * (cmyk ? 4 : 3));
        if (!row) {
            snprintf(err, errlen, "out of memory for a %d-pixel row", width);
            jpeg_destroy_decompress(&d);
            fclose(f);
            return 1;
        }
    }
    size_t stride = (size_t)width * (size_t)channels;
    while (d.output_scanline < d.output_height) {
        unsigned char *dst = out + (size_t)d.output_scanline * stride;
        JSAMPROW rows[1] = {direct ? dst : row};
        if (jpeg_read_scanlines(&d, rows, 1) != 1) break;
        if (!direct) convert_row(row, dst, width, channels, cmyk);
        if (e.ended_early) break;
    }
    if (!e.ended_early && d.output_scanline == d.output_height) jpeg_finish_decompress(&d);
    int ok = !e.ended_early && d.output_scanline == d.output_height;
    if (!ok) snprintf(err, errlen, "file ends early");
    free(row);
    jpeg_destroy_decompress(&d);
    fclose(f);
    return ok ? 0 : 1;
}
