// The item Resize of on-device mode (issue 30), exactly as the server makes the model's input
// (maskclassifier/core/resize.py): fastai's centred crop box with its own roundings, then Pillow's resize of that
// crop, ported from Pillow's libImaging/Resample.c (8 bits per channel): coefficients computed in doubles,
// normalised, turned into 22-bit fixed point; a horizontal pass, 8-bit results rounded and clipped, then a
// vertical pass. The result is byte-for-byte Pillow's (tests/test_ondevice_resize.py compares them in Node).
// Loaded by the page (window.MaskResize) and by Node (module.exports) alike; no DOM here.
(function (root) {
  "use strict";
  var PRECISION_BITS = 32 - 8 - 2;
  var FILTERS = {
    bilinear: { support: 1.0, f: function (x) { if (x < 0) { x = -x; } return x < 1 ? 1 - x : 0; } },
    box: { support: 0.5, f: function (x) { return (x > -0.5 && x <= 0.5) ? 1 : 0; } },
    hamming: { support: 1.0, f: function (x) {
      if (x < 0) { x = -x; }
      if (x === 0) { return 1; }
      if (x >= 1) { return 0; }
      x = x * Math.PI;
      return Math.sin(x) / x * (0.54 + 0.46 * Math.cos(x));
    } },
    bicubic: { support: 2.0, f: function (x) {
      var a = -0.5;
      if (x < 0) { x = -x; }
      if (x < 1) { return ((a + 2) * x - (a + 3)) * x * x + 1; }
      if (x < 2) { return (((x - 5) * x + 8) * x - 4) * a; }
      return 0;
    } },
    lanczos: { support: 3.0, f: function (x) {
      function sinc(v) { if (v === 0) { return 1; } v = v * Math.PI; return Math.sin(v) / v; }
      if (x > -3 && x < 3) { return sinc(x) * sinc(x / 3); }
      return 0;
    } }
  };

  // Pillow's precompute_coeffs followed by normalize_coeffs_8bpc: for each output pixel, the first input pixel,
  // how many, and their fixed-point weights.
  function coefficients(inSize, in0, in1, outSize, filter) {
    var scale = (in1 - in0) / outSize;
    var filterscale = scale < 1 ? 1 : scale;
    var support = filter.support * filterscale;
    var ksize = Math.ceil(support) * 2 + 1;
    var bounds = new Int32Array(outSize * 2);
    var kk = new Int32Array(outSize * ksize);
    var weights = new Float64Array(ksize);
    for (var xx = 0; xx < outSize; xx++) {
      var center = in0 + (xx + 0.5) * scale;
      var ww = 0;
      var ss = 1 / filterscale;
      var xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) { xmin = 0; }
      var xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) { xmax = inSize; }
      xmax -= xmin;
      var x;
      for (x = 0; x < xmax; x++) {
        var w = filter.f((x + xmin - center + 0.5) * ss);
        weights[x] = w;
        ww += w;
      }
      for (x = 0; x < xmax; x++) {
        var k = ww !== 0 ? weights[x] / ww : weights[x];
        var fixed = k * (1 << PRECISION_BITS);
        kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + fixed) : Math.trunc(0.5 + fixed);
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { ksize: ksize, bounds: bounds, kk: kk };
  }

  function clip8(value) {
    if (value >= (1 << PRECISION_BITS) * 256) { return 255; }
    if (value <= 0) { return 0; }
    return Math.floor(value / (1 << PRECISION_BITS));  // value >> 22, without 32-bit overflow
  }

  // One horizontal pass of Pillow's (ImagingResampleHorizontal_8bpc): rows [rowFirst, rowFirst + rows) of the
  // region at (x0, y0) of `src` (`stride` pixels a row, `channels` bytes a pixel) -> RGB, outWidth a row.
  function passHorizontal(src, stride, channels, x0, y0, rowFirst, rows, outWidth, coeffs) {
    var half = 1 << (PRECISION_BITS - 1);
    var out = new Uint8Array(outWidth * rows * 3);
    var kk = coeffs.kk, bounds = coeffs.bounds, ksize = coeffs.ksize;
    for (var y = 0; y < rows; y++) {
      var rowStart = ((y0 + rowFirst + y) * stride + x0) * channels;
      for (var xx = 0; xx < outWidth; xx++) {
        var xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], kbase = xx * ksize;
        var s0 = half, s1 = half, s2 = half;
        for (var x = 0; x < xmax; x++) {
          var weight = kk[kbase + x];
          var p = rowStart + (x + xmin) * channels;
          s0 += src[p] * weight;
          s1 += src[p + 1] * weight;
          s2 += src[p + 2] * weight;
        }
        var o = (y * outWidth + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    return out;
  }

  // One vertical pass (ImagingResampleVertical_8bpc): `columns` columns of the region at (x0, y0) -> RGB rows of
  // `columns` pixels, outHeight of them; `shift` is subtracted from every row bound (rows skipped before).
  function passVertical(src, stride, channels, x0, y0, columns, outHeight, coeffs, shift) {
    var half = 1 << (PRECISION_BITS - 1);
    var out = new Uint8Array(columns * outHeight * 3);
    var kk = coeffs.kk, bounds = coeffs.bounds, ksize = coeffs.ksize;
    for (var yy = 0; yy < outHeight; yy++) {
      var ymin = bounds[yy * 2] - shift, ymax = bounds[yy * 2 + 1], kbase = yy * ksize;
      for (var col = 0; col < columns; col++) {
        var t0 = half, t1 = half, t2 = half;
        for (var y = 0; y < ymax; y++) {
          var weight = kk[kbase + y];
          var q = ((y0 + ymin + y) * stride + x0 + col) * channels;
          t0 += src[q] * weight;
          t1 += src[q + 1] * weight;
          t2 += src[q + 2] * weight;
        }
        var r = (yy * columns + col) * 3;
        out[r] = clip8(t0);
        out[r + 1] = clip8(t1);
        out[r + 2] = clip8(t2);
      }
    }
    return out;
  }

  // Pillow's resize of the region (x0, y0, width, height) of an RGBA (channels 4) or RGB (3) pixel buffer
  // `pixels` of `stride` pixels a row, to outWidth x outHeight: RGB bytes, row after row. Pillow resizes in
  // two passes with 8-bit results in between, horizontal first as Resample.c's ImagingResampleInner does. Byte
  // for byte Pillow 13's for a square to a square (the item Resize's only case: fastai's crop has the target's
  // shape) and for one-axis resizes; for other shapes Pillow 13 sometimes does the vertical pass first, and the
  // roundings then differ by 1 here and there (no rule found in the time there was; not used by the app).
  function resizeRegion(pixels, stride, channels, x0, y0, width, height, outWidth, outHeight, resample) {
    var filter = FILTERS[resample || "bilinear"];
    if (!filter) { throw new Error("unknown resample " + resample); }
    var needHorizontal = outWidth !== width;
    var needVertical = outHeight !== height;
    var horizontal = coefficients(width, 0, width, outWidth, filter);
    var vertical = coefficients(height, 0, height, outHeight, filter);
    if (needHorizontal && needVertical) {
      if (true) {  // see above: Pillow's pass order for non-square shapes is not reproduced
        var first = vertical.bounds[0];
        var last = vertical.bounds[outHeight * 2 - 2] + vertical.bounds[outHeight * 2 - 1];
        var temp = passHorizontal(pixels, stride, channels, x0, y0, first, last - first, outWidth, horizontal);
        return passVertical(temp, outWidth, 3, 0, 0, outWidth, outHeight, vertical, first);
      }
      var left = horizontal.bounds[0];
      var right = horizontal.bounds[outWidth * 2 - 2] + horizontal.bounds[outWidth * 2 - 1];
      var tall = passVertical(pixels, stride, channels, x0 + left, y0, right - left, outHeight, vertical, 0);
      var shifted = { kk: horizontal.kk, ksize: horizontal.ksize, bounds: new Int32Array(horizontal.bounds) };
      for (var i = 0; i < outWidth; i++) { shifted.bounds[i * 2] -= left; }
      return passHorizontal(tall, right - left, 3, 0, 0, 0, outHeight, outWidth, shifted);
    }
    if (needHorizontal) { return passHorizontal(pixels, stride, channels, x0, y0, 0, height, outWidth, horizontal); }
    if (needVertical) { return passVertical(pixels, stride, channels, x0, y0, width, outHeight, vertical, 0); }
    var copy = new Uint8Array(width * height * 3);  // the same size: a copy, as RGB
    for (var cy = 0; cy < height; cy++) {
      for (var cx = 0; cx < width; cx++) {
        var from = ((y0 + cy) * stride + x0 + cx) * channels, to = (cy * width + cx) * 3;
        copy[to] = pixels[from]; copy[to + 1] = pixels[from + 1]; copy[to + 2] = pixels[from + 2];
      }
    }
    return copy;
  }

  // fastai's Resize(method='crop') box on the validation split (core/resize.py fastai_crop_box), with its roundings.
  function cropBox(width, height, targetWidth, targetHeight) {
    var scale = width / targetWidth < height / targetHeight ? width / targetWidth : height / targetHeight;
    var cropWidth = Math.trunc(scale * targetWidth), cropHeight = Math.trunc(scale * targetHeight);
    var left = Math.trunc(0.5 * (width - cropWidth)), top = Math.trunc(0.5 * (height - cropHeight));
    return [left, top, left + cropWidth, top + cropHeight];
  }

  // The model's input for the region (x0, y0, x1, y1) of a photo, as the server's ItemResize makes it from
  // image.crop(region): fastai's crop of the region, resized to width x height.
  function itemResize(pixels, stride, channels, region, size) {
    var w = region[2] - region[0], h = region[3] - region[1];
    var box = cropBox(w, h, size.width, size.height);
    return resizeRegion(pixels, stride, channels, region[0] + box[0], region[1] + box[1], box[2] - box[0],
                        box[3] - box[1], size.width, size.height, size.resample);
  }

  var api = { resizeRegion: resizeRegion, cropBox: cropBox, itemResize: itemResize };
  if (typeof module === "object" && module.exports) { module.exports = api; } else { root.MaskResize = api; }
})(typeof self !== "undefined" ? self : this);
