#include "pt_test_jpeg.h"

#include <stdio.h>
#include <jpeglib.h>

int pt_test_jpeg_write(const char *path, const unsigned char *pixels, int width, int height, int components,
                       int quality, int progressive, const unsigned char *exif, int exif_len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);  // the tests write valid images only: libjpeg's default exit is fine
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)width;
    c.image_height = (JDIMENSION)height;
    c.input_components = components;
    c.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (exif_len > 0) jpeg_write_marker(&c, JPEG_APP0 + 1, exif, (unsigned)exif_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)c.next_scanline * (size_t)width * (size_t)components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return fclose(f) == 0 ? 0 : 1;
}
