"""Files as text for upstreams that cannot read files: bounded, and every refusal naming the part."""

from __future__ import annotations

import pytest

from cove.errors import InvalidRequest
from cove.service import file_text
from cove.service.file_inputs import decode_file_data
from tests.helpers import encrypted, pdf_bytes


def test_text_and_pdfs_become_text() -> None:
    assert file_text.file_text("a.txt", "\ufeffgrüße\n".encode(), "p") == "grüße\n"
    assert file_text.file_text("a.pdf", pdf_bytes("Page one text"), "p") == "Page one text"


def test_long_text_is_cut_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_text, "MAX_CHARS", 10)
    assert file_text.file_text("a.txt", b"x" * 25, "p") == "x" * 10 + "\n[... 15 more characters not shown]"


def test_pages_past_the_cap_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_text, "MAX_PAGES", 0)
    assert file_text.file_text("a.pdf", pdf_bytes("never read"), "p") == "\n[... pages 1-1 of 1 not shown]"


@pytest.mark.parametrize(("data", "code"), [
    (encrypted(pdf_bytes("secret")), "encrypted_pdf"),
    (b"%PDF-1.7\n1 0 obj <<", "invalid_pdf"),
    (b"\x00\x01\x02binary", "unsupported_file"),
    (b"\xff\xfe not utf-8", "unsupported_file"),
])
def test_what_cannot_be_text_is_a_400_naming_the_part(data: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        file_text.file_text("f", data, "input[0].content[1].file_id")
    assert (refused.value.code, refused.value.param) == (code, "input[0].content[1].file_id")


def test_file_data_is_a_data_url_or_bare_base64() -> None:
    assert decode_file_data("data:text/plain;base64,aGk=", "p") == b"hi"
    assert decode_file_data("data:text/plain,h%69", "p") == b"hi"
    assert decode_file_data("aGk=", "p") == b"hi"
    with pytest.raises(InvalidRequest):
        decode_file_data("not base64!", "p")


def test_images_are_known_by_their_magic_numbers() -> None:
    assert file_text.image_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert file_text.image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert file_text.image_type(b"%PDF-1.4") is None
