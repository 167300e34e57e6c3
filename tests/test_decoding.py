"""decode_text: BOM, binary, UTF-8 fast path, declared charset, detection; expectations from Python's codecs."""

import codecs

import pytest

from lmpipe.decoding import Decoded, UndecodableError, decode_text

TEXT = {
    "ru": "Привет, как дела? Это тестовый текст на русском языке. Мы проверяем определение кодировки.",
    "fr": "L'élève a été très content de voir ça : où est la forêt ? Noël à Paris, c'est déjà l'été.",
    "pt": "A acentuação é importante em português: não, ação, coração, você está lá. " * 2,
    "ja": "これは日本語のテキストです。エンコーディングの検出をテストします。東京は日本の首都です。",
    "zh": "这是一个中文文本，用于测试编码检测功能是否正常工作。北京是中国的首都。"
    * 2,  # one line is too short
    "el": "Αυτό είναι ένα ελληνικό κείμενο για τη δοκιμή της ανίχνευσης κωδικοποίησης.",
}


def test_utf8_is_the_fast_path(monkeypatch):
    import charset_normalizer

    def boom(*a, **k):
        raise AssertionError("detection must not run on valid UTF-8")

    monkeypatch.setattr(charset_normalizer, "from_bytes", boom)
    assert decode_text("Grüße, 東京 ✓".encode()) == Decoded("Grüße, 東京 ✓", "utf-8", 1.0)
    assert decode_text(b"") == Decoded("", "utf-8", 1.0)


@pytest.mark.parametrize(
    "bom,enc",
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
    ],
)
def test_bom_names_the_encoding(bom, enc):
    text = "Grüße aus Köln, 東京 \U0001f600"
    assert decode_text(bom + text.encode(enc)) == Decoded(text, enc, 1.0)


def test_bom_with_broken_body_is_undecodable():
    with pytest.raises(UndecodableError) as e:
        decode_text(codecs.BOM_UTF16_LE + "abc".encode("utf-16-le") + b"\x00")  # odd length: half a code unit
    assert e.value.reason == "undecodable" and "utf-16-le" in e.value.detail


@pytest.mark.parametrize(
    "raw",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),  # an image header
        b"hello\x00world",
        bytes([1, 2, 3, 4, 5, 6, 7, 8]) * 8 + b"text",  # control bytes, no NUL
        codecs.BOM_UTF16_LE + b"a\x00\x00\x00" + b"ab" * 10,  # starts like a BOM, decodes to NUL
    ],
)
def test_binary_is_refused(raw):
    with pytest.raises(UndecodableError) as e:
        decode_text(raw)
    assert e.value.reason == "binary" and e.value.detail


@pytest.mark.parametrize(
    "lang,enc",
    [
        ("ru", "cp1251"),
        ("ru", "koi8_r"),
        ("fr", "cp1252"),
        ("pt", "cp1252"),
        ("ja", "shift_jis"),
        ("zh", "gbk"),
        ("el", "iso8859_7"),
    ],
)
def test_legacy_encodings_are_detected(lang, enc):
    got = decode_text(TEXT[lang].encode(enc))
    assert got.text == TEXT[lang] and got.encoding != "utf-8" and 0.8 <= got.confidence <= 1.0


def test_declared_charset_is_used_when_it_decodes():
    raw = "Käse".encode("latin-1")  # alone, too short to detect
    assert decode_text(raw, "ISO-8859-1") == Decoded("Käse", "iso8859-1", 1.0)
    assert decode_text("Käse".encode(), "latin-1").encoding == "utf-8"  # valid UTF-8 outranks a declaration
    with pytest.raises(UndecodableError):
        decode_text(raw, "no-such-charset")  # an unknown label is ignored, detection decides
    assert decode_text(TEXT["ru"].encode("cp1251"), "ascii").text == TEXT["ru"]  # a wrong one too


@pytest.mark.parametrize(
    "raw",
    [
        "Käse".encode("latin-1"),  # 4 bytes
        b'{"text": "caf\xe9"}',  # one odd byte in a short line
        bytes(range(128, 256)) * 3,  # every high byte, no text
    ],
)
def test_too_little_or_messy_text_is_undecodable(raw):
    with pytest.raises(UndecodableError) as e:
        decode_text(raw)
    assert e.value.reason == "undecodable" and "not UTF-8 (byte" in e.value.detail


def test_utf8_with_a_stray_byte_is_not_turned_into_mojibake():
    good = ("Ein Stück Käse, größere Übungen für Mädchen. " * 20).encode()
    for declared in (None, "cp1252"):  # not even when a legacy charset is declared
        with pytest.raises(UndecodableError) as e:
            decode_text(good[:300] + b"\xff" + good[300:], declared)
        assert "byte 300" in e.value.detail and "damaged UTF-8" in e.value.detail


def test_min_confidence_makes_detection_stricter():
    raw = ("Zażółć gęślą jaźń. Pójdźże, kiń tę chmurność w głąb flaszy! " * 3).encode("cp1250")
    got = decode_text(raw)
    assert got.text.startswith("Zażółć") and got.confidence < 1.0
    with pytest.raises(UndecodableError, match="confidence"):
        decode_text(raw, min_confidence=got.confidence + 0.01)
