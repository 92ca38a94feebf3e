"""multipart/form-data bodies, already read into memory (and bounded) by RequestLimits.

The body is in memory anyway, so it is split here by its boundary rather than streamed through
a parser package the serve extra would have to add.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

FORM_TYPE = "multipart/form-data"
# Far more than a search form has; a body of thousands of tiny parts is an attack, not a search.
MAX_PARTS = 64
_MAX_BOUNDARY = 70  # RFC 2046


class FormError(ValueError):
    """The body is not a well-formed multipart/form-data form; the message says how."""


@dataclass(frozen=True)
class FormPart:
    """One field of a form: its name, the file name a browser sent with a file, its bytes."""

    name: str
    filename: str | None
    content_type: str
    data: bytes

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"form field {self.name!r} is not UTF-8 text") from None


def is_form(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == FORM_TYPE


def parse_form(content_type: str, body: bytes) -> list[FormPart]:
    """The parts of a multipart/form-data body, in order."""
    boundary = _param(content_type, "boundary", "content-type")
    if not boundary or len(boundary) > _MAX_BOUNDARY:
        raise FormError("a multipart/form-data body needs a boundary of 1 to 70 characters in its Content-Type")
    delimiter = b"--" + boundary.encode("latin-1", errors="replace")
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        # Anything before the first boundary is a preamble, which readers ignore.
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            raise FormError("the form body does not start with its boundary")
        pos = found + 2 + len(delimiter)
    parts: list[FormPart] = []
    while not body.startswith(b"--", pos):
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise FormError("the form body is cut short or malformed after a boundary")
        head_start = line_end + 2
        if body.startswith(b"\r\n", head_start):
            head, content_start = b"", head_start + 2
        else:
            head_end = body.find(b"\r\n\r\n", head_start)
            if head_end < 0:
                raise FormError("a form part's headers have no end")
            head, content_start = body[head_start:head_end], head_end + 4
        end = body.find(b"\r\n" + delimiter, content_start)
        if end < 0:
            raise FormError("the form body has no closing boundary (was it cut short?)")
        parts.append(_part(head, body[content_start:end]))
        if len(parts) > MAX_PARTS:
            raise FormError(f"too many form fields (at most {MAX_PARTS})")
        pos = end + 2 + len(delimiter)
    return parts


def _part(head: bytes, data: bytes) -> FormPart:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            raise FormError("a form part has a malformed header line")
        # Browsers send file names as raw UTF-8 inside the quotes.
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", errors="replace")
    disposition = headers.get("content-disposition", "")
    if disposition.split(";", 1)[0].strip().lower() != "form-data":
        raise FormError("a form part has no Content-Disposition: form-data header")
    part_name = _param(disposition, "name", "content-disposition")
    if part_name is None:
        raise FormError("a form part has no name")
    return FormPart(
        name=part_name,
        filename=_param(disposition, "filename", "content-disposition"),
        content_type=headers.get("content-type", "text/plain"),
        data=data,
    )


def _param(header_value: str, param: str, header: str) -> str | None:
    """One parameter of a header (name="image", boundary=...), quoting and RFC 2231 undone."""
    message = Message()
    message[header] = header_value
    value = message.get_param(param, header=header)
    if value is None:
        return None
    return collapse_rfc2231_value(value)
