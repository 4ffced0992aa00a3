// Per-face mode on the device (issue 30): MTCNN as the server runs it (maskclassifier/classifier/mtcnn_onnx.py,
// faces.py, core/facebox.py), ported step by step: the photo shrunk to the detection size, the image pyramid
// (area means from an integer summed-area table), P-Net's windows (at most max_candidates_per_scale a scale),
// NMS within each scale (IoU 0.5) and across scales (0.7), box regression and squaring, R-Net on 24 px crops
// (NMS 0.7), O-Net on 48 px crops, the final NMS over the smaller box (0.7), then the faces as the server keeps
// them: score at least min_score, boxes scaled back and rounded as Python rounds, the max_faces surest, in
// reading order. The three networks are the server's files (models/mtcnn/), run by ONNX Runtime Web; every
// parameter comes from GET /api/model's decision_rules.faces. Float32 arithmetic is repeated where NumPy does
// it in float32 (the thresholds, the window corners). The second look at a dark photo (faces.find_faces: its
// contrast stretched) is ported too; where the low-contrast test is too close to call here, the server answers.
// Loaded by the page as window.MaskFaces.
(function (root) {
  "use strict";

  // Python's round(): halves to the even neighbour.
  function pyRound(value) {
    var floor = Math.floor(value), diff = value - floor;
    if (diff > 0.5) { return floor + 1; }
    if (diff < 0.5) { return floor; }
    return floor % 2 === 0 ? floor : floor + 1;
  }

  // summed_area: (h + 1) x (w + 1) x 3 integer sums of RGB(A) pixels
  function summedArea(pixels, width, height, channels) {
    var stride = (width + 1) * 3;
    var table = new Int32Array((height + 1) * stride);
    for (var y = 0; y < height; y++) {
      var r = 0, g = 0, b = 0;
      var row = (y + 1) * stride, above = y * stride, p = y * width * channels;
      for (var x = 0; x < width; x++, p += channels) {
        r += pixels[p]; g += pixels[p + 1]; b += pixels[p + 2];
        var t = row + (x + 1) * 3, u = above + (x + 1) * 3;
        table[t] = table[u] + r; table[t + 1] = table[u + 1] + g; table[t + 2] = table[u + 2] + b;
      }
    }
    return { data: table, width: width, height: height, stride: stride };
  }

  // torch's adaptive average pool bounds: output i of a span of `length` from `start` covers
  // [start + i*L // out, start + ceil((i+1)*L / out))
  function poolBounds(start, length, out) {
    var first = new Int32Array(out), end = new Int32Array(out);
    for (var i = 0; i < out; i++) {
      first[i] = start + Math.floor(i * length / out);
      end[i] = start + Math.floor(((i + 1) * length + out - 1) / out);
    }
    return [first, end];
  }

  // Area means of the region (x0, y0, w, h) resized to outW x outH, normalised as MTCNN was trained
  // ((x - 127.5) / 128, in float32), written into `into` (3 x outH x outW planes) at `offset`.
  function areaInto(table, x0, y0, w, h, outW, outH, into, offset) {
    var rows = poolBounds(y0, h, outH), cols = poolBounds(x0, w, outW);
    var data = table.data, stride = table.stride, plane = outW * outH;
    for (var i = 0; i < outH; i++) {
      var a = rows[0][i] * stride, b = rows[1][i] * stride, rowCount = rows[1][i] - rows[0][i];
      for (var j = 0; j < outW; j++) {
        var c = cols[0][j] * 3, d = cols[1][j] * 3;
        var count = Math.fround(rowCount * (cols[1][j] - cols[0][j]));
        for (var k = 0; k < 3; k++) {
          var sum = data[b + d + k] - data[a + d + k] - data[b + c + k] + data[a + c + k];
          var mean = Math.fround(sum / count);
          into[offset + k * plane + i * outW + j] = Math.fround(mean - 127.5) * 0.0078125;
        }
      }
    }
  }

  function pyramidScales(height, width, rules) {
    var scale = 12.0 / rules.min_face_size, short = Math.min(height, width) * 12.0 / rules.min_face_size;
    var scales = [];
    while (short >= 12) {
      scales.push(scale);
      scale = scale * rules.pyramid_factor;
      short = short * rules.pyramid_factor;
    }
    return scales;
  }

  // Greedy NMS (mtcnn_onnx.nms): indices kept, surest first; IoU without +1, or over the smaller box with +1.
  function nms(boxes, threshold, bySmaller) {
    var plus = bySmaller ? 1 : 0;
    var order = boxes.map(function (box, index) { return index; });
    order.sort(function (a, b) { return boxes[b][4] - boxes[a][4]; });  // stable: ties keep their order
    var suppressed = new Uint8Array(boxes.length), kept = [];
    for (var n = 0; n < order.length; n++) {
      var i = order[n];
      if (suppressed[i]) { continue; }
      kept.push(i);
      var bi = boxes[i], areaI = (bi[2] - bi[0] + plus) * (bi[3] - bi[1] + plus);
      for (var m = n + 1; m < order.length; m++) {
        var j = order[m];
        if (suppressed[j]) { continue; }
        var bj = boxes[j];
        var w = Math.max(0, Math.min(bi[2], bj[2]) - Math.max(bi[0], bj[0]) + plus);
        var h = Math.max(0, Math.min(bi[3], bj[3]) - Math.max(bi[1], bj[1]) + plus);
        var inter = w * h, areaJ = (bj[2] - bj[0] + plus) * (bj[3] - bj[1] + plus);
        var base = bySmaller ? Math.min(areaI, areaJ) : areaI + areaJ - inter;
        if ((base > 0 ? inter / base : 0) > threshold) { suppressed[j] = 1; }
      }
    }
    return kept;
  }

  function squared(box) {
    var height = box[3] - box[1], width = box[2] - box[0], side = Math.max(width, height);
    box[0] += width * 0.5 - side * 0.5;
    box[1] += height * 0.5 - side * 0.5;
    box[2] = box[0] + side;
    box[3] = box[1] + side;
    return box;
  }

  function regressed(box, offsets) {
    var width = box[2] - box[0] + 1, height = box[3] - box[1] + 1;
    box[0] += offsets[0] * width; box[1] += offsets[1] * height;
    box[2] += offsets[2] * width; box[3] += offsets[3] * height;
    return box;
  }

  // The pixels a box covers, clipped to the photo as facenet-pytorch's pad: [x0, y0, x1, y1], end exclusive.
  function clipped(box, height, width) {
    return [Math.max(Math.trunc(box[0]), 1) - 1, Math.max(Math.trunc(box[1]), 1) - 1,
            Math.min(Math.trunc(box[2]), width), Math.min(Math.trunc(box[3]), height)];
  }

  // (n, 3, size, size) crops of the bounds, as one Float32Array
  function crops(table, bounds, size) {
    var one = 3 * size * size, out = new Float32Array(bounds.length * one);
    bounds.forEach(function (b, index) { areaInto(table, b[0], b[1], b[2] - b[0], b[3] - b[1], size, size, out, index * one); });
    return out;
  }

  // mtcnn_onnx.OnnxMtcnnDetector.find on RGB(A) pixels: [[x0, y0, x1, y1, score], ...] in those pixels' units.
  function find(ort, sessions, pixels, width, height, channels, rules) {
    var table = summedArea(pixels, width, height, channels);
    var found = [];
    var first = Math.fround(rules.thresholds[0]);
    var chain = Promise.resolve();
    pyramidScales(height, width, rules).forEach(function (scale) {
      chain = chain.then(function () {
        var levelH = Math.trunc(height * scale + 1), levelW = Math.trunc(width * scale + 1);
        var input = new Float32Array(3 * levelH * levelW);
        areaInto(table, 0, 0, width, height, levelW, levelH, input, 0);
        var feeds = {};
        feeds[sessions.pnet.inputNames[0]] = new ort.Tensor("float32", input, [1, 3, levelH, levelW]);
        return sessions.pnet.run(feeds).then(function (outputs) {
          var regression = outputs[sessions.pnet.outputNames[0]], probabilities = outputs[sessions.pnet.outputNames[1]];
          var mapH = probabilities.dims[2], mapW = probabilities.dims[3], cells = mapH * mapW;
          var faceMap = probabilities.data.subarray(cells, 2 * cells), reg = regression.data;
          var passing = [];
          for (var c = 0; c < cells; c++) { if (faceMap[c] >= first) { passing.push(c); } }
          if (cells > rules.max_candidates_per_scale && passing.length > rules.max_candidates_per_scale) {
            // as np.argpartition: the `keep` largest of the whole map (ties at the edge may differ)
            var sorted = Array.prototype.slice.call(faceMap).sort(function (a, b) { return b - a; });
            var cutoff = sorted[rules.max_candidates_per_scale - 1];
            var above = passing.filter(function (cell) { return faceMap[cell] > cutoff; });
            var at = passing.filter(function (cell) { return faceMap[cell] === cutoff; });
            var keep = {};
            above.concat(at.slice(0, rules.max_candidates_per_scale - above.length)).forEach(function (cell) { keep[cell] = true; });
            passing = passing.filter(function (cell) { return keep[cell]; });
          }
          var fscale = Math.fround(scale);
          var windows = passing.map(function (cell) {
            var y = Math.floor(cell / mapW), x = cell % mapW;
            return [Math.floor(Math.fround((2 * x + 1) / fscale)), Math.floor(Math.fround((2 * y + 1) / fscale)),
                    Math.floor(Math.fround((2 * x + 12) / fscale)), Math.floor(Math.fround((2 * y + 12) / fscale)),
                    faceMap[cell], reg[cell], reg[cells + cell], reg[2 * cells + cell], reg[3 * cells + cell]];
          });
          nms(windows, 0.5, false).forEach(function (index) { found.push(windows[index]); });
        });
      });
    });
    return chain.then(function () {
      var boxes = nms(found, 0.7, false).map(function (index) {
        var w = found[index];
        var sx = w[2] - w[0], sy = w[3] - w[1];
        return squared([w[0] + w[5] * sx, w[1] + w[6] * sy, w[2] + w[7] * sx, w[3] + w[8] * sy, w[4]]);
      });
      return stage(ort, sessions.rnet, table, boxes, 24, Math.fround(rules.thresholds[1]), rules, height, width).then(function (result) {
        var keep = nms(result.boxes, 0.7, false);
        var refined = keep.map(function (index) { return squared(regressed(result.boxes[index], result.offsets[index])); });
        return stage(ort, sessions.onet, table, refined, 48, Math.fround(rules.thresholds[2]), rules, height, width);
      }).then(function (result) {
        var boxes = result.boxes.map(function (box, index) { return regressed(box, result.offsets[index]); });
        return nms(boxes, 0.7, true).map(function (index) { return boxes[index].slice(0, 5); });
      });
    });
  }

  // R-Net or O-Net on the boxes' crops: the boxes that pass, with their regression offsets.
  function stage(ort, session, table, boxes, size, threshold, rules, height, width) {
    var inside = [], bounds = [];
    boxes.forEach(function (box) {
      var b = clipped(box, height, width);
      if (b[2] > b[0] && b[3] > b[1]) { inside.push(box); bounds.push(b); }
    });
    var passed = { boxes: [], offsets: [] };
    var chain = Promise.resolve();
    for (var start = 0; start < inside.length; start += rules.batch) {
      (function (from, to) {
        chain = chain.then(function () {
          var feeds = {};
          feeds[session.inputNames[0]] = new ort.Tensor("float32", crops(table, bounds.slice(from, to), size),
                                                        [to - from, 3, size, size]);
          return session.run(feeds).then(function (outputs) {
            var names = session.outputNames;
            var regression = outputs[names[0]].data, probabilities = outputs[names[names.length - 1]].data;
            for (var i = 0; i < to - from; i++) {
              var p = probabilities[i * 2 + 1];
              if (p > threshold) {
                var box = inside[from + i];
                passed.boxes.push([box[0], box[1], box[2], box[3], p]);
                passed.offsets.push([regression[i * 4], regression[i * 4 + 1], regression[i * 4 + 2], regression[i * 4 + 3]]);
              }
            }
          });
        });
      })(start, Math.min(inside.length, start + rules.batch));
    }
    return chain.then(function () { return passed; });
  }

  // facebox.reading_order: rows from top to bottom, each from left to right
  function readingOrder(faces) {
    if (!faces.length) { return []; }
    function centreY(face) { return (face.box[1] + face.box[3]) / 2; }
    var heights = faces.map(function (face) { return face.box[3] - face.box[1]; }).sort(function (a, b) { return a - b; });
    var tolerance = heights[Math.floor(heights.length / 2)] / 2;
    var rows = [];
    faces.slice().sort(function (a, b) { return centreY(a) - centreY(b); }).forEach(function (face) {
      var row = rows[rows.length - 1];
      if (row && centreY(face) - centreY(row[0]) <= tolerance) { row.push(face); } else { rows.push([face]); }
    });
    var ordered = [];
    rows.forEach(function (row) {
      row.sort(function (a, b) { return a.box[0] - b.box[0]; }).forEach(function (face) { ordered.push(face); });
    });
    return ordered;
  }

  // facebox.face_scan: detections on a copy scaled by 1/factor -> {faces: [{box, score}], found}
  function faceScan(detections, factor, width, height, rules) {
    var faces = [];
    detections.forEach(function (row) {
      if (row[4] < rules.min_score) { return; }
      var box = [Math.max(0, pyRound(row[0] * factor)), Math.max(0, pyRound(row[1] * factor)),
                 Math.min(width, pyRound(row[2] * factor)), Math.min(height, pyRound(row[3] * factor))];
      if (box[2] > box[0] && box[3] > box[1]) { faces.push({ box: box, score: row[4] }); }
    });
    var kept = faces.slice().sort(function (a, b) { return b.score - a.score; }).slice(0, rules.max_faces);
    return { faces: readingOrder(kept), found: faces.length };
  }

  // facebox.crop_box: the face box grown by `margin` on every side, clipped
  function cropBox(box, width, height, margin) {
    var padX = (box[2] - box[0]) * margin, padY = (box[3] - box[1]) * margin;
    return [Math.max(0, pyRound(box[0] - padX)), Math.max(0, pyRound(box[1] - padY)),
            Math.min(width, pyRound(box[2] + padX)), Math.min(height, pyRound(box[3] + padY))];
  }

  // The detection copy (images.shrunk to detection_max_side, bilinear): exact when the photo already fits; a
  // larger photo is resized by the Pillow port in one step, where Pillow box-reduces first (reducing_gap 2), so
  // its pixels, and sometimes a box by a pixel, differ a little from the server's.
  function detectionCopy(photo, maxSide) {
    var scale = Math.min(1, maxSide / Math.max(photo.width, photo.height));
    if (scale === 1) { return { pixels: photo.pixels, width: photo.width, height: photo.height, channels: 4, scale: 1 }; }
    var w = Math.max(1, pyRound(photo.width * scale)), h = Math.max(1, pyRound(photo.height * scale));
    var pixels = root.MaskResize.resizeRegion(photo.pixels, photo.width, 4, 0, 0, photo.width, photo.height, w, h, "bilinear");
    return { pixels: pixels, width: w, height: h, channels: 3, scale: scale };
  }

  // Pillow's RGB -> L
  function grey(r, g, b) { return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; }

  // faces.low_contrast on an RGB(A) copy: the luminance between its 1st and 99th percentiles spans less than
  // `range` levels, on a grey copy thumbnailed to 256 px. Exact for copies of at most 256 px (nothing to
  // thumbnail); a bigger copy is thumbnailed by the Pillow port without Pillow's box-reduction first, so a photo
  // within 10 levels of the line is "unsure" (it goes to the server). Returns true, false or null (unsure).
  function lowContrast(copy, range) {
    var w = copy.width, h = copy.height, c = copy.channels, pixels = copy.pixels, exact = true;
    if (w > 256 || h > 256) {
      var aspect = w / h, tw = 256, th = 256;
      if (tw / th >= aspect) { tw = Math.max(1, Math.round(th * aspect)); } else { th = Math.max(1, Math.round(tw / aspect)); }
      pixels = root.MaskResize.resizeRegion(pixels, w, c, 0, 0, w, h, tw, th, "bicubic");
      w = tw; h = th; c = 3; exact = false;
    }
    var histogram = new Float64Array(256), total = w * h;
    for (var i = 0; i < total; i++) { histogram[grey(pixels[i * c], pixels[i * c + 1], pixels[i * c + 2])] += 1; }
    var seen = 0, low = null, high = 255;
    for (var level = 0; level < 256; level++) {
      seen += histogram[level];
      if (low === null && seen > total * 0.01) { low = level; }
      if (seen >= total * 0.99) { high = level; break; }
    }
    var spread = high - (low || 0);
    if (!exact && Math.abs(spread - range) <= 10) { return null; }
    return spread < range;
  }

  // ImageOps.autocontrast(copy, cutoff=1): each band stretched to the full range, 1 % clipped at each end.
  function autocontrast(copy) {
    var c = copy.channels, n = copy.width * copy.height, out = new Uint8Array(n * 3);
    for (var band = 0; band < 3; band++) {
      var h = new Float64Array(256);
      for (var i = 0; i < n; i++) { h[copy.pixels[i * c + band]] += 1; }
      var cut = Math.floor(n * 1 / 100), lo, hi;
      for (lo = 0; lo < 256; lo++) {
        if (cut > h[lo]) { cut -= h[lo]; h[lo] = 0; } else { h[lo] -= cut; cut = 0; }
        if (cut <= 0) { break; }
      }
      cut = Math.floor(n * 1 / 100);
      for (hi = 255; hi >= 0; hi--) {
        if (cut > h[hi]) { cut -= h[hi]; h[hi] = 0; } else { h[hi] -= cut; cut = 0; }
        if (cut <= 0) { break; }
      }
      for (lo = 0; lo < 256; lo++) { if (h[lo]) { break; } }
      for (hi = 255; hi >= 0; hi--) { if (h[hi]) { break; } }
      var lut = new Uint8Array(256);
      for (var ix = 0; ix < 256; ix++) {
        if (hi <= lo) { lut[ix] = ix; continue; }
        var scale = 255.0 / (hi - lo), offset = -lo * scale;
        lut[ix] = Math.min(255, Math.max(0, Math.trunc(ix * scale + offset)));
      }
      for (var j = 0; j < n; j++) { out[j * 3 + band] = lut[copy.pixels[j * c + band]]; }
    }
    return { pixels: out, width: copy.width, height: copy.height, channels: 3, scale: copy.scale };
  }

  // OnnxMtcnnDetector.detect on a detection copy: faces in the copy's own pixels, then scaled to the photo's
  function scanOf(ort, sessions, copy, rules, photo) {
    if (Math.min(copy.width, copy.height) < rules.min_face_size) { return Promise.resolve({ faces: [], found: 0 }); }
    return find(ort, sessions, copy.pixels, copy.width, copy.height, copy.channels, rules).then(function (rows) {
      return faceScan(rows, 1 / copy.scale, photo.width, photo.height, rules);
    });
  }

  // faces.find_faces: the faces found; when none is and the photo is low in contrast, the faces found in a
  // contrast-stretched copy (at most detection_max_side), boxes scaled as the server scales them. `maxSide`
  // (the live camera's frame_detection_side) searches a smaller copy, as faces.analyse_frame does. Rejects, so
  // that the server answers, when the low-contrast test is too close to call here.
  function detect(ort, sessions, photo, rules, maxSide) {
    var copy = detectionCopy(photo, maxSide || rules.detection_max_side);
    return scanOf(ort, sessions, copy, rules, photo).then(function (scan) {
      if (scan.faces.length) { return scan; }
      // the server's second look: the photo (or the live frame's copy) shrunk to retry_max_side
      var retrySide = rules.retry_max_side || rules.detection_max_side;
      var small = maxSide || retrySide === rules.detection_max_side ? copy : detectionCopy(photo, retrySide);
      var dark = lowContrast(small, rules.low_contrast_range);
      if (dark === null) { throw new Error("no face found, and whether the photo is dark is too close to call here"); }
      if (!dark) { return scan; }
      var stretched = autocontrast(small);
      return scanOf(ort, sessions, { pixels: stretched.pixels, width: small.width, height: small.height, channels: 3,
                                     scale: 1 }, rules, small).then(function (again) {
        var factor = 1 / small.scale;
        return {
          found: again.found,
          faces: again.faces.map(function (face) {
            return { score: face.score, box: [Math.max(0, pyRound(face.box[0] * factor)), Math.max(0, pyRound(face.box[1] * factor)),
                                              Math.min(photo.width, pyRound(face.box[2] * factor)),
                                              Math.min(photo.height, pyRound(face.box[3] * factor))] };
          })
        };
      });
    });
  }

  root.MaskFaces = { detect: detect, cropBox: cropBox, pyRound: pyRound, nms: nms };
})(self);
