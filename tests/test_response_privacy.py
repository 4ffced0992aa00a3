"""What the app sends back about a user's photo: no metadata of the upload in the images it returns, no caching of
anything that carries the photo or its answer, and no redirect that points at a host or scheme a client chose."""

from __future__ import annotations

import base64
import io
import re
import struct

import pytest
from PIL import Image, ImageCms

from datasets import face_like_image
from helpers import upload

COMMENT = b"secret-comment-5f3a"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>secret-xmp-creator-9c1e'
       b'</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>')
IPTC_MARK = b"secret-iptc-byline-77aa"
GPS_IFD = 0x8825
SECRETS = (COMMENT, b"secret-xmp-creator", IPTC_MARK, b"secret-exif-maker", b"Exif\x00\x00", b"ICC_PROFILE",
           b"http://ns.adobe.com/xap/1.0/", b"Photoshop 3.0", b"acsp")  # acsp: the signature of any ICC profile


def jpeg_with_metadata() -> bytes:
    """A face-like JPEG carrying a comment, EXIF with GPS, XMP, an ICC profile and an IPTC (APP13) block."""
    image = face_like_image(["Medical"], seed=3, size=(240, 320))
    exif = Image.Exif()
    exif[0x010F] = "secret-exif-maker"  # Make
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 36.0)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, comment=COMMENT, exif=exif, xmp=XMP, icc_profile=srgb)
    data = buffer.getvalue()
    # Pillow writes no IPTC: an APP13 "Photoshop 3.0" block with one IPTC dataset (2:80 by-line), after SOI.
    dataset = b"\x1c\x02\x50" + struct.pack(">H", len(IPTC_MARK)) + IPTC_MARK
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(dataset)) + dataset
    app13 = b"Photoshop 3.0\x00" + resource
    data = data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:]
    opened = Image.open(io.BytesIO(data))  # the upload really carries them all
    assert opened.info["comment"] == COMMENT and "xmp" in opened.info and "icc_profile" in opened.info
    assert opened.getexif().get_ifd(GPS_IFD) and "photoshop" in opened.info
    return data


def jpeg_segments(data: bytes) -> list[int]:
    """The markers of a JPEG's segments before its image data."""
    assert data[:2] == b"\xff\xd8"
    markers, at = [], 2
    while at < len(data):
        assert data[at] == 0xFF
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: the image data follows
            break
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        kinds.append(kind)
        at += 12 + length
    return kinds


def assert_no_metadata(data: bytes) -> None:
    for secret in SECRETS:
        assert secret not in data, secret
    opened = Image.open(io.BytesIO(data))
    leaked = {"comment", "exif", "xmp", "icc_profile", "photoshop", "XML:com.adobe.xmp"} & set(opened.info)
    assert not leaked, leaked
    assert not opened.getexif(), "no EXIF"
    if opened.format == "JPEG":
        allowed = {0xD8, 0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xDA}  # SOI, JFIF, tables, frame, restart, scan
        assert set(jpeg_segments(data)) <= allowed, [hex(marker) for marker in jpeg_segments(data)]
    else:
        assert set(png_chunks(data)) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"pHYs", b"tRNS"}, png_chunks(data)


def data_uris(text: str) -> list[bytes]:
    return [base64.b64decode(match) for match in re.findall(r"data:image/(?:jpeg|png);base64,([A-Za-z0-9+/=]+)", text)]


@pytest.fixture(scope="module")
def answering(make_app):
    return make_app(threshold=0.01).test_client()


def test_the_annotated_photo_carries_none_of_the_uploads_metadata(answering):
    response = answering.post("/api/annotate", data=upload(jpeg_with_metadata()))
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert_no_metadata(response.data)


def test_the_heat_maps_carry_none_of_the_uploads_metadata(answering):
    response = answering.post("/api/explain?format=png", data=upload(jpeg_with_metadata()))
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert_no_metadata(response.data)
    body = answering.post("/api/explain?faces=on", data=upload(jpeg_with_metadata())).get_json()
    pictures = [base64.b64decode(body["overlay"].split(",", 1)[1])]
    pictures += [base64.b64decode(face["overlay"].split(",", 1)[1]) for face in body.get("faces", [])]
    for picture in pictures:
        assert_no_metadata(picture)


@pytest.mark.parametrize("path", ["/result", "/"])
@pytest.mark.parametrize("faces", ["off", "on"])
def test_the_pages_preview_and_face_thumbnails_carry_none_of_the_uploads_metadata(answering, path, faces):
    response = answering.post(path, data={**upload(jpeg_with_metadata()), "faces": faces})
    assert response.status_code == 200
    pictures = data_uris(response.get_data(as_text=True))
    assert pictures, "the preview is embedded in the page"
    for picture in pictures:
        assert_no_metadata(picture)


def swapped_primaries_profile() -> bytes:
    """A minimal ICC v2 RGB display profile whose red and blue primaries are sRGB's blue and red (gamma 2.2): a
    photo tagged with it that stores (255, 0, 0) means blue."""
    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags = [(b"rXYZ", xyz(0.1431, 0.0606, 0.7141)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_a_photo_with_an_icc_profile_is_sent_converted_to_srgb(answering):
    """The profile is applied, not just dropped: the colours a browser shows stay the photo's."""
    image = face_like_image(["Medical"], seed=3, size=(240, 320))
    image.paste((255, 0, 0), (0, 0, 60, 320))  # a red band on the left: blue in the swapped profile
    colours = {}
    for name, params in (("tagged", {"icc_profile": swapped_primaries_profile()}), ("plain", {})):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **params)
        response = answering.post("/result", data={**upload(buffer.getvalue(), "photo.png", "image/png"),
                                                   "faces": "off"})
        assert response.status_code == 200
        preview = data_uris(response.get_data(as_text=True))[0]
        assert_no_metadata(preview)
        colours[name] = Image.open(io.BytesIO(preview)).convert("RGB").getpixel((20, 160))
    red, green, blue = colours["plain"]
    assert red > 200 and blue < 60, colours
    red, green, blue = colours["tagged"]
    assert blue > 150 and red < 100, colours


PHOTO_ADDRESSES = ["/", "/result", "/api/predict", "/api/predict?faces=on", "/api/annotate", "/api/explain",
                   "/api/explain?format=png", "/api/frame"]


@pytest.mark.parametrize("path", PHOTO_ADDRESSES)
def test_answers_about_a_photo_are_never_cached(answering, face_jpeg, path):
    response = answering.post(path, data=upload(face_jpeg))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", PHOTO_ADDRESSES)
@pytest.mark.parametrize("case", ["no_file", "not_an_image", "too_large", "bad_parameter", "malformed"])
def test_errors_about_a_photo_are_never_cached(answering, path, case):
    if case == "no_file":
        response = answering.post(path, data={})
    elif case == "not_an_image":
        response = answering.post(path, data=upload(b"%PDF-1.4 not a photo"))
    elif case == "too_large":
        response = answering.post(path, data=upload(b"\xff" * (3 * 1024 * 1024)))
    elif case == "bad_parameter":
        response = answering.post(path + ("&" if "?" in path else "?") + "faces=sideways&format=gif",
                                  data=upload(b"x"))
    else:
        response = answering.post(path, data=b"--x\r\nbroken", content_type="multipart/form-data; boundary=x")
    assert 400 <= response.status_code < 500, response.status_code
    assert response.headers["Cache-Control"] == "no-store"


def test_static_files_keep_their_long_caching_and_pages_without_a_photo_are_untouched(answering):
    page = answering.get("/")
    assert "no-store" not in page.headers.get("Cache-Control", "")
    script = re.search(r'src="(/static/app\.js\?v=\w+)"', page.get_data(as_text=True)).group(1)
    assert answering.get(script).headers["Cache-Control"] == "public, max-age=31536000, immutable"


HOSTILE = {"Host": "evil.example", "X-Forwarded-Proto": "javascript"}


def get_raw(client, path: str, scheme: str = "http"):
    """GET `path` exactly as given (the test client would read //static/x as a host), with a hostile Host, a
    hostile X-Forwarded-Proto, and (as a proxy that trusts it would) that scheme."""
    return client.get("/", environ_overrides={"PATH_INFO": path, "wsgi.url_scheme": scheme}, headers=HOSTILE)


# Werkzeug's routing ignores leading slashes (//api/model is /api/model, served as such); a // inside a path is a
# plain 404 now, where it was a redirect to the merged path on the client's host and scheme.
WHAT_PATHS_GET = {"/static//x": 404, "//static/x": 404, "/static//app.js": 404, "//static//app.js": 404, "//": 200,
                  "//api/model": 200, "/api//model": 404, "//result": 405}


@pytest.mark.parametrize("path", WHAT_PATHS_GET)
@pytest.mark.parametrize("scheme", ["http", "javascript"])
def test_no_address_redirects_to_a_host_or_scheme_the_client_chose(answering, path, scheme):
    response = get_raw(answering, path, scheme)
    assert response.status_code == WHAT_PATHS_GET[path], (response.status_code, response.headers.get("Location"))
    assert "Location" not in response.headers
    assert "evil.example" not in response.get_data(as_text=True) and "javascript" not in response.headers.get(
        "Content-Type", "")


@pytest.mark.parametrize("scheme", ["http", "javascript"])
def test_a_trailing_slash_redirect_is_a_path_on_this_site(make_app, scheme):
    """The app has no address ending in / but the start page; one added later gets a relative redirect."""
    app = make_app()
    app.add_url_rule("/probe/", "probe", lambda: "probe")
    response = get_raw(app.test_client(), "/probe", scheme)
    assert response.status_code == 308 and response.headers["Location"] == "/probe/"
    response = app.test_client().get("/", environ_overrides={"PATH_INFO": "/probe", "QUERY_STRING": "a=1"},
                                     headers=HOSTILE)
    assert response.headers["Location"] == "/probe/?a=1"
