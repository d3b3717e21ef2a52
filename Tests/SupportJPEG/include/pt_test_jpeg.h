// A JPEG writer for the tests (libjpeg-turbo): the files a photo folder holds, made on the spot.
#ifndef PT_TEST_JPEG_H
#define PT_TEST_JPEG_H

/// Writes `pixels` (`width` x `height` x `components`: 1 grey, 3 RGB, 4 CMYK stored inverted as
/// Adobe's files store it) to `path` at `quality`, progressive or baseline, with `exif` (`exif_len`
/// bytes, may be 0) as an APP1 marker. 0 on success.
int pt_test_jpeg_write(const char *path, const unsigned char *pixels, int width, int height, int components,
                       int quality, int progressive, const unsigned char *exif, int exif_len);

#endif
