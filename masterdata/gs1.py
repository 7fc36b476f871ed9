"""GS1 identifiers and their three notations: element strings, GS1 Digital Link URIs and EPC URNs.

Pure Python (stdlib only, no Django) so that it can be used by models, serializers, importers and
line-system adapters alike. Every check raises :class:`GS1Error` with a message that says what is wrong
and how to fix it, because these messages end up in front of master-data stewards and line operators.

Sources: GS1 General Specifications, GS1 Barcode Syntax Dictionary (``gs1-syntax-dictionary.txt``),
GS1 Digital Link URI Syntax, GS1 EPC Tag Data Standard; IFA specifications for PZN and PPN.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "CHARSET_82",
    "SERIAL_UNSAFE_CHARS",
    "GS1Error",
    "build_digital_link",
    "build_element_string",
    "check_digit",
    "company_prefix_of",
    "gtin_from_ndc",
    "is_valid_check_digit",
    "lgtin_urn",
    "normalise_gtin",
    "ntin_from_pzn",
    "parse_digital_link",
    "parse_element_string",
    "parse_lgtin_urn",
    "parse_sgln_urn",
    "parse_sgtin_urn",
    "parse_sscc_urn",
    "ppn_from_pzn",
    "sgln_urn",
    "sgtin_urn",
    "sscc_from_parts",
    "sscc_urn",
    "validate_ai_value",
    "validate_gln",
    "validate_lot",
    "validate_ppn",
    "validate_serial",
    "validate_sscc",
]


class GS1Error(ValueError):
    """A GS1 identifier or data element is invalid; the message names the problem and the fix."""


_SYMBOLS_82 = "!\"%&'()*+,-./:;<=>?_"
CHARSET_82: frozenset[str] = frozenset(
    _SYMBOLS_82 + "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
)
SERIAL_UNSAFE_CHARS = '"%&/<>?'

_GS = "\x1d"  # ASCII group separator: how scanners transmit FNC1 between variable-length elements
# Symbology identifiers that announce GS1 data: DataMatrix, GS1-128, QR, DataBar, DotCode, Aztec.
_GS1_SYMBOLOGY_IDS = ("]d2", "]C1", "]Q3", "]e0", "]J1", "]z1")
_DIGITS = frozenset("0123456789")
# EPC Tag Data Standard: these characters of set 82 must be %-escaped inside URN serials/lots/extensions.
_URN_ESCAPES = {ch: f"%{ord(ch):02X}" for ch in SERIAL_UNSAFE_CHARS}
_PERCENT_HEX = re.compile(r"%([0-9A-Fa-f]{2})")


# --------------------------------------------------------------------------------------------------
# Application Identifier table (subset of the GS1 Barcode Syntax Dictionary used by this system)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AISpec:
    title: str
    numeric: bool
    min_len: int
    max_len: int
    predefined_length: bool = False  # needs no FNC1 separator after it ("*" flag in the dictionary)
    check_digit: bool = False
    date: bool = False
    dl_attribute: bool = False  # may appear in a Digital Link query string ("?" flag in the dictionary)


_AIS: dict[str, _AISpec] = {
    "00": _AISpec("SSCC", True, 18, 18, predefined_length=True, check_digit=True, dl_attribute=True),
    "01": _AISpec("GTIN", True, 14, 14, predefined_length=True, check_digit=True, dl_attribute=True),
    "10": _AISpec("lot", False, 1, 20, dl_attribute=True),
    "11": _AISpec("production date", True, 6, 6, predefined_length=True, date=True, dl_attribute=True),
    "17": _AISpec("expiry date", True, 6, 6, predefined_length=True, date=True, dl_attribute=True),
    "21": _AISpec("serial", False, 1, 20),
    "22": _AISpec("consumer product variant", False, 1, 20),
    "710": _AISpec("national number (PZN)", False, 1, 20, dl_attribute=True),
    "711": _AISpec("national number (CIP)", False, 1, 20, dl_attribute=True),
    "712": _AISpec("national number (CN)", False, 1, 20, dl_attribute=True),
    "713": _AISpec("national number (DRN)", False, 1, 20, dl_attribute=True),
    "714": _AISpec("national number (AIM)", False, 1, 20, dl_attribute=True),
    "715": _AISpec("national number (NDC)", False, 1, 20, dl_attribute=True),
    # The dictionary allows X..90 for 91-99; this system uses them only for the Russian crypto tail,
    # whose operator-issued lengths are fixed (4 and 44), so anything else is a data error.
    "91": _AISpec("crypto key", False, 4, 4, dl_attribute=True),
    "92": _AISpec("crypto code", False, 44, 44, dl_attribute=True),
}
_SUPPORTED_AIS = ", ".join(_AIS)
_DL_QUALIFIERS = {"01": ("22", "10", "21"), "00": ()}


def _ai_sort_key(ai: str) -> tuple[bool, str]:
    # Predefined-length AIs first (no FNC1 needed after them), then lexical AI order as in the dictionary.
    return (not _AIS[ai].predefined_length, ai)


def _spec(ai: str) -> _AISpec:
    spec = _AIS.get(ai) if isinstance(ai, str) else None
    if spec is None:
        raise GS1Error(f"AI ({ai}) is not supported here — use one of {_SUPPORTED_AIS}.")
    return spec


# --------------------------------------------------------------------------------------------------
# Check digits and numeric keys
# --------------------------------------------------------------------------------------------------


def _require_digits(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise GS1Error(f"{label} must be text, got {type(value).__name__} — pass the digits as a string.")
    if value == "":
        raise GS1Error(f"{label} is empty — give the full number including its check digit.")
    for position, char in enumerate(value, start=1):
        if char not in _DIGITS:
            raise GS1Error(
                f"{label} {value!r} has {char!r} at position {position} — use digits only "
                "(remove spaces, dashes and letters)."
            )
    return value


def _check_prefix_length(prefix_length: object) -> int:
    if isinstance(prefix_length, bool) or not isinstance(prefix_length, int) or not 6 <= prefix_length <= 12:
        raise GS1Error(
            f"Company prefix length {prefix_length!r} is invalid — use a whole number from 6 to 12, "
            "as recorded for the company (it cannot be derived from the code)."
        )
    return prefix_length


def check_digit(body: str) -> str:
    """GS1 mod-10 check digit of ``body`` (all digits of the key except the check digit)."""
    _require_digits("Check-digit body", body)
    # Weights 3,1,3,1… counted from the rightmost body digit, so the result is independent of padding.
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def is_valid_check_digit(code: str) -> bool:
    """True when ``code`` is at least two digits and its last digit is the GS1 mod-10 check digit."""
    if not isinstance(code, str) or len(code) < 2 or not set(code) <= _DIGITS:
        return False
    return check_digit(code[:-1]) == code[-1]


def _verify_check_digit(label: str, code: str) -> None:
    expected = check_digit(code[:-1])
    if code[-1] != expected:
        raise GS1Error(f"{label} {code} has check digit {code[-1]}; expected {expected} — correct the last digit.")


def _fixed_key(label: str, code: object, length: int) -> str:
    _require_digits(label, code)
    assert isinstance(code, str)
    if len(code) != length:
        raise GS1Error(
            f"{label} {code} has {len(code)} digits — it must have exactly {length}; check for missing or extra digits."
        )
    _verify_check_digit(label, code)
    return code


def normalise_gtin(code: str) -> str:
    """Validate a GTIN-8/12/13/14 and return it as 14 digits (left-padded with zeros)."""
    _require_digits("GTIN", code)
    if len(code) not in (8, 12, 13, 14):
        raise GS1Error(
            f"GTIN {code} has {len(code)} digits — a GTIN has 8, 12, 13 or 14 digits; "
            "check for missing or extra digits."
        )
    _verify_check_digit("GTIN", code)
    return code.zfill(14)


def validate_gln(code: str) -> str:
    """Validate a 13-digit GLN (with check digit) and return it unchanged."""
    return _fixed_key("GLN", code, 13)


def validate_sscc(code: str) -> str:
    """Validate an 18-digit SSCC (with check digit) and return it unchanged."""
    return _fixed_key("SSCC", code, 18)


def _company_prefix_digits(company_prefix: object) -> str:
    _require_digits("Company prefix", company_prefix)
    assert isinstance(company_prefix, str)
    if not 6 <= len(company_prefix) <= 12:
        raise GS1Error(
            f"Company prefix {company_prefix} has {len(company_prefix)} digits — a GS1 company prefix has "
            "6 to 12 digits; use the prefix exactly as licensed by GS1."
        )
    return company_prefix


def sscc_from_parts(extension_digit: str | int, company_prefix: str, serial_reference: int | str) -> str:
    """Build an SSCC: extension digit + company prefix + zero-padded serial reference + check digit."""
    ext = (
        str(extension_digit) if isinstance(extension_digit, int | str) and not isinstance(extension_digit, bool) else ""
    )
    if len(ext) != 1 or ext not in _DIGITS:
        raise GS1Error(f"SSCC extension digit {extension_digit!r} is invalid — use a single digit 0 to 9.")
    prefix = _company_prefix_digits(company_prefix)
    if isinstance(serial_reference, bool) or not isinstance(serial_reference, int | str):
        raise GS1Error(
            f"SSCC serial reference {serial_reference!r} is invalid — pass a non-negative integer or a digit string."
        )
    if isinstance(serial_reference, str):
        _require_digits("SSCC serial reference", serial_reference)
    number = int(serial_reference)
    room = 16 - len(prefix)
    if number < 0 or number >= 10**room:
        raise GS1Error(
            f"SSCC serial reference {serial_reference} does not fit: company prefix {prefix} ({len(prefix)} digits) "
            f"leaves {room} digits — use a serial reference from 0 to {10**room - 1}."
        )
    body = ext + prefix + str(number).zfill(room)
    return body + check_digit(body)


# --------------------------------------------------------------------------------------------------
# National codes: PZN / NTIN / PPN (Germany), NDC (United States)
# --------------------------------------------------------------------------------------------------


def _validate_pzn(pzn: object) -> str:
    _require_digits("PZN", pzn)
    assert isinstance(pzn, str)
    if len(pzn) != 8:
        hint = " (prefix an old 7-digit PZN with 0)" if len(pzn) == 7 else ""
        raise GS1Error(f"PZN {pzn} has {len(pzn)} digits — a PZN8 has exactly 8 digits{hint}.")
    remainder = sum(int(d) * weight for weight, d in enumerate(pzn[:7], start=1)) % 11
    if remainder == 10:
        raise GS1Error(
            f"PZN {pzn} cannot be valid: its first 7 digits give check remainder 10, which IFA never issues — "
            "check the number against the IFA record."
        )
    if pzn[7] != str(remainder):
        raise GS1Error(f"PZN {pzn} has check digit {pzn[7]}; expected {remainder} — correct the last digit.")
    return pzn


def ntin_from_pzn(pzn: str) -> str:
    """German NTIN for a PZN8: ``0`` + ``4150`` + PZN8 + GS1 check digit."""
    body = "04150" + _validate_pzn(pzn)
    return body + check_digit(body)


def _ppn_check(body: str) -> str:
    # IFA: sum of ASCII code × weight, weights starting at 2 on the first character, modulo 97.
    return f"{sum(ord(char) * weight for weight, char in enumerate(body, start=2)) % 97:02d}"


def ppn_from_pzn(pzn: str) -> str:
    """German PPN for a PZN8: PRA code ``11`` + PZN8 + two IFA check digits."""
    body = "11" + _validate_pzn(pzn)
    return body + _ppn_check(body)


def validate_ppn(ppn: str) -> str:
    """Validate a PPN (PRA code, product number, two check digits; ``0-9A-Z``, 5..22 characters)."""
    if not isinstance(ppn, str) or not ppn:
        raise GS1Error(f"PPN {ppn!r} is empty or not text — give the full PPN including its two check digits.")
    for position, char in enumerate(ppn, start=1):
        if not ("0" <= char <= "9" or "A" <= char <= "Z"):
            raise GS1Error(
                f"PPN {ppn!r} has {char!r} at position {position} — a PPN uses only digits and upper-case letters A–Z."
            )
    if not 5 <= len(ppn) <= 22:
        raise GS1Error(
            f"PPN {ppn} has {len(ppn)} characters — a PPN has 5 to 22 (2-digit PRA code, product number, "
            "2 check digits); check for missing or extra characters."
        )
    if not ppn[-2:].isdigit():
        raise GS1Error(f"PPN {ppn} ends in {ppn[-2:]!r} — the last two characters must be the numeric check digits.")
    expected = _ppn_check(ppn[:-2])
    if ppn[-2:] != expected:
        raise GS1Error(f"PPN {ppn} has check digits {ppn[-2:]}; expected {expected} — correct the last two digits.")
    if ppn.startswith("11"):
        # PRA code 11 = IFA: the product number is a PZN8, which carries its own check digit.
        _validate_pzn(ppn[2:-2])
    return ppn


# Labeler-product-package segment lengths allowed for the 10-digit NDC.
_NDC_LAYOUTS = {(4, 4, 2), (5, 3, 2), (5, 4, 1)}


def gtin_from_ndc(ndc: str) -> str:
    """US GTIN-14 for a 10-digit NDC: ``0`` + ``03`` + NDC10 + check digit (hyphenated 4-4-2/5-3-2/5-4-1 accepted)."""
    if not isinstance(ndc, str) or not ndc:
        raise GS1Error(f"NDC {ndc!r} is empty or not text — give the 10-digit NDC.")
    parts = ndc.split("-")
    if len(parts) == 3:
        if tuple(len(p) for p in parts) not in _NDC_LAYOUTS:
            raise GS1Error(
                f"NDC {ndc} has segments of {'-'.join(str(len(p)) for p in parts)} digits — "
                "a 10-digit NDC is 4-4-2, 5-3-2 or 5-4-1."
            )
    elif len(parts) != 1:
        raise GS1Error(f"NDC {ndc} is not in a recognised form — give 10 digits, optionally as 4-4-2, 5-3-2 or 5-4-1.")
    digits = "".join(parts)
    _require_digits("NDC", digits)
    if len(digits) != 10:
        hint = (
            " (an 11-digit NDC is the billing format with a padding zero; use the 10-digit NDC from the label)"
            if len(digits) == 11
            else ""
        )
        raise GS1Error(f"NDC {ndc} has {len(digits)} digits — a GTIN is built from the 10-digit NDC{hint}.")
    body = "003" + digits
    return body + check_digit(body)


# --------------------------------------------------------------------------------------------------
# AI values
# --------------------------------------------------------------------------------------------------


def _validate_text_82(label: str, value: object, min_len: int, max_len: int) -> str:
    if not isinstance(value, str):
        raise GS1Error(f"{label} must be text, got {type(value).__name__} — pass it as a string.")
    if value == "":
        raise GS1Error(f"{label} is empty — give {min_len} to {max_len} characters of GS1 character set 82.")
    for position, char in enumerate(value, start=1):
        if char not in CHARSET_82:
            raise GS1Error(
                f"{label} {value!r} has {char!r} (U+{ord(char):04X}) at position {position}, which is not in "
                f"GS1 character set 82 — use only A–Z, a–z, 0–9 and {_SYMBOLS_82}."
            )
    if not min_len <= len(value) <= max_len:
        wanted = f"exactly {min_len}" if min_len == max_len else f"{min_len} to {max_len}"
        raise GS1Error(f"{label} {value!r} has {len(value)} characters — it must have {wanted}.")
    return value


def _validate_yymmdd(label: str, value: str, *, day_zero_allowed: bool) -> None:
    month, day = int(value[2:4]), int(value[4:6])
    if not 1 <= month <= 12:
        raise GS1Error(f"{label} {value} has month {value[2:4]} — use YYMMDD with a month from 01 to 12.")
    if day == 0 and day_zero_allowed:
        return
    # Leap years from YY alone: GS1 resolves YY within ±50 years of today, i.e. 1976–2075 for now,
    # where every year divisible by 4 is a leap year (2000 included).
    last_day = calendar.monthrange(2000 + int(value[:2]), month)[1]
    if not 1 <= day <= last_day:
        allowed = "00 (end of month) or " if day_zero_allowed else ""
        raise GS1Error(
            f"{label} {value} has day {value[4:6]}, which does not exist in month {value[2:4]} — "
            f"use a day from {allowed}01 to {last_day:02d}."
        )


def validate_ai_value(ai: str, value: str) -> str:
    """Check ``value`` against the syntax of ``ai`` (length, character set, check digit, date) and return it as given.

    Dates (AI 11, 17) are YYMMDD; day ``00`` (= end of month) is accepted for both, as the GS1 Barcode
    Syntax Dictionary specifies ``yymmd0`` for each, and the value is kept exactly as given.
    """
    spec = _spec(ai)
    label = f"AI ({ai}) {spec.title}"
    if not spec.numeric:
        return _validate_text_82(label, value, spec.min_len, spec.max_len)
    _require_digits(label, value)
    if len(value) != spec.max_len:
        raise GS1Error(
            f"{label} {value} has {len(value)} digits — AI ({ai}) takes exactly {spec.max_len} digits"
            + ("; pad a shorter GTIN with leading zeros." if ai == "01" else ".")
        )
    if spec.check_digit:
        _verify_check_digit(label, value)
    if spec.date:
        _validate_yymmdd(label, value, day_zero_allowed=True)
    return value


def validate_serial(serial: str) -> str:
    """Validate a serial number (AI 21): 1 to 20 characters of GS1 character set 82."""
    return validate_ai_value("21", serial)


def validate_lot(lot: str) -> str:
    """Validate a lot/batch number (AI 10): 1 to 20 characters of GS1 character set 82."""
    return validate_ai_value("10", lot)


def _validated_dict(ais: dict[str, str]) -> dict[str, str]:
    if not isinstance(ais, dict) or not ais:
        raise GS1Error("No AIs given — pass a dict such as {'01': '09521234543213', '21': '12345'}.")
    for ai, value in ais.items():
        validate_ai_value(ai, value)
    return ais


# --------------------------------------------------------------------------------------------------
# Element strings
# --------------------------------------------------------------------------------------------------


def build_element_string(ais: dict[str, str]) -> str:
    """Bracketed element string, e.g. ``(01)09521234543213(17)261231(10)ABC123(21)12345``.

    Predefined-length AIs (00, 01, 11, 17) come first, then the others, each group in AI order. A literal
    ``(`` inside a value is written ``\\(`` (the convention of GS1's own syntax engine), so the string
    parses back unambiguously.
    """
    ordered = sorted(_validated_dict(ais), key=_ai_sort_key)
    return "".join(f"({ai})" + ais[ai].replace("(", "\\(") for ai in ordered)


def _raw_element_string(ais: dict[str, str]) -> str:
    """Unbracketed barcode data with GS after every variable-length element except the last."""
    ordered = sorted(_validated_dict(ais), key=_ai_sort_key)
    parts = []
    for index, ai in enumerate(ordered):
        needs_separator = not _AIS[ai].predefined_length and index < len(ordered) - 1
        parts.append(ai + ais[ai] + (_GS if needs_separator else ""))
    return "".join(parts)


def _store(result: dict[str, str], ai: str, value: str) -> None:
    validate_ai_value(ai, value)
    if ai in result and result[ai] != value:
        raise GS1Error(
            f"AI ({ai}) appears twice with different values {result[ai]!r} and {value!r} — keep only the correct one."
        )
    result.setdefault(ai, value)


def _parse_bracketed(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    pos, length = 0, len(text)
    while pos < length:
        if text[pos] != "(":
            raise GS1Error(f"Element string {text!r} has {text[pos]!r} at position {pos + 1} — expected '(' of an AI.")
        close = text.find(")", pos)
        if close == -1:
            raise GS1Error(
                f"Element string {text!r} has an unclosed '(' at position {pos + 1} — close the AI with ')'."
            )
        ai = text[pos + 1 : close]
        _spec(ai)
        chars: list[str] = []
        pos = close + 1
        while pos < length and text[pos] != "(":
            if text.startswith("\\(", pos):
                chars.append("(")
                pos += 2
            else:
                chars.append(text[pos])
                pos += 1
        # Whitespace is never valid data (not in set 82), so spacing in printed HRI text is dropped safely.
        _store(result, ai, "".join(chars).strip(" \t\r\n"))
    return result


def _parse_raw(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    pos, length = 0, len(text)
    while pos < length:
        if text[pos] == _GS:  # FNC1 is tolerated between any two elements (GS1 General Specifications 7.8.6)
            pos += 1
            continue
        ai = next((c for c in (text[pos : pos + 2], text[pos : pos + 3]) if c in _AIS), None)
        if ai is None:
            raise GS1Error(
                f"Element string has no supported AI at position {pos + 1} ({text[pos : pos + 6]!r}…) — "
                f"supported AIs are {_SUPPORTED_AIS}; check that a GS separator ends each variable-length value."
            )
        spec = _AIS[ai]
        start = pos + len(ai)
        if spec.predefined_length:
            end = start + spec.max_len
        else:
            end = text.find(_GS, start)
            end = length if end == -1 else end
        value = text[start:end]
        if not spec.predefined_length and len(value) > spec.max_len:
            raise GS1Error(
                f"AI ({ai}) {spec.title} runs {len(value)} characters without a GS separator (at most "
                f"{spec.max_len} allowed) — end the value with GS (FNC1, \\x1d) before the next AI."
            )
        _store(result, ai, value)
        pos = end
    return result


def parse_element_string(text: str) -> dict[str, str]:
    """Parse bracketed (``(01)…(21)…``) or raw barcode data (GS/FNC1 separators, optional ``]d2``-style prefix).

    Returns ``{ai: value}`` in order of appearance; every value is validated.
    """
    if not isinstance(text, str):
        raise GS1Error(f"Element string must be text, got {type(text).__name__} — pass the scanned data as a string.")
    data = text.strip(" \t\r\n")
    if data.startswith("]"):
        if data[:3] not in _GS1_SYMBOLOGY_IDS:
            raise GS1Error(
                f"Symbology identifier {data[:3]!r} does not announce GS1 data — scan a GS1 barcode "
                f"({', '.join(_GS1_SYMBOLOGY_IDS)})."
            )
        data = data[3:]
    if not data.strip(_GS):
        raise GS1Error("Element string is empty — give data such as (01)09521234543213(21)12345.")
    return _parse_bracketed(data) if data.startswith("(") else _parse_raw(data)


# --------------------------------------------------------------------------------------------------
# GS1 Digital Link
# --------------------------------------------------------------------------------------------------


def _dl_encode(value: str) -> str:
    # safe="" percent-encodes every set-82 symbol, which is what the DL standard asks for in path and query.
    return quote(value, safe="")


def build_digital_link(ais: dict[str, str], base: str = "https://id.gs1.org") -> str:
    """GS1 Digital Link URI: primary key 01 (or 00), path qualifiers 22 → 10 → 21, other AIs in the query by AI."""
    _validated_dict(ais)
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        raise GS1Error(f"Digital Link base {base!r} is not an http(s) URL — use e.g. 'https://id.gs1.org'.")
    if "01" in ais and "00" in ais:
        raise GS1Error(
            "A Digital Link has one primary key but both (00) and (01) were given — build one link for each."
        )
    primary = "01" if "01" in ais else "00" if "00" in ais else None
    if primary is None:
        raise GS1Error("A Digital Link needs a primary key — add AI (01) GTIN or AI (00) SSCC.")
    path_ais = [primary, *(ai for ai in _DL_QUALIFIERS[primary] if ai in ais)]
    query_ais = sorted(ai for ai in ais if ai not in path_ais)
    for ai in query_ais:
        if not _AIS[ai].dl_attribute:
            raise GS1Error(
                f"AI ({ai}) cannot go in a Digital Link with primary key ({primary}) — it is only a path qualifier "
                "of (01); add the GTIN or drop it."
            )
    uri = base.rstrip("/") + "".join(f"/{ai}/{_dl_encode(ais[ai])}" for ai in path_ais)
    if query_ais:
        uri += "?" + "&".join(f"{ai}={_dl_encode(ais[ai])}" for ai in query_ais)
    return uri


def _dl_path_pairs(segments: list[str], start: int) -> dict[str, str] | None:
    """Key/value pairs from ``start`` if they form primary key + qualifiers in the prescribed order, else None."""
    primary = segments[start]
    result = {primary: segments[start + 1]}
    allowed = list(_DL_QUALIFIERS[primary])
    for index in range(start + 2, len(segments), 2):
        ai = segments[index]
        if ai not in allowed:
            return None
        del allowed[: allowed.index(ai) + 1]  # later qualifiers only: 22 → 10 → 21
        result[ai] = segments[index + 1]
    return result


def parse_digital_link(uri: str) -> dict[str, str]:
    """Parse a GS1 Digital Link URI on any host (path prefixes allowed); values are percent-decoded and validated.

    Non-numeric query parameters (``linkType`` etc.) are ignored; a GTIN-8/12/13 in the path is padded to 14 digits.
    """
    if not isinstance(uri, str):
        raise GS1Error(f"Digital Link must be text, got {type(uri).__name__} — pass the URI as a string.")
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise GS1Error(f"Digital Link {uri!r} is not an http(s) URI — give e.g. https://id.gs1.org/01/<GTIN>.")
    # Split before decoding so an encoded '/' (%2F) inside a value does not create a segment.
    raw_segments = [s for s in parts.path.split("/") if s]
    segments = [unquote(s) if "%" in s else s for s in raw_segments]
    pairs = None
    for start in range(len(segments) - 1):
        if segments[start] in _DL_QUALIFIERS and (len(segments) - start) % 2 == 0:
            pairs = _dl_path_pairs(segments, start)
            if pairs is not None:
                break
    if pairs is None:
        raise GS1Error(
            f"Digital Link {uri!r} has no valid primary key path — it must end in /01/<GTIN>[/22/…][/10/…][/21/…] "
            "or /00/<SSCC>, with qualifiers in that order."
        )
    result: dict[str, str] = {}
    for ai, value in pairs.items():
        if ai == "01" and len(value) in (8, 12, 13):
            value = normalise_gtin(value)
        _store(result, ai, value)
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        if not key.isdigit():
            continue  # linkType, context and other non-AI parameters carry no identification data
        spec = _spec(key)
        if not spec.dl_attribute:
            raise GS1Error(
                f"AI ({key}) is in the query of Digital Link {uri!r} but may only be a path qualifier — "
                "move it into the path after the GTIN."
            )
        _store(result, key, unquote(value))
    return result


# --------------------------------------------------------------------------------------------------
# Company prefix and EPC URNs (GS1 EPC Tag Data Standard, pure-identity and class URIs)
# --------------------------------------------------------------------------------------------------


def company_prefix_of(code: str, prefix_length: int) -> str:
    """Company prefix of a GTIN (8/12/13/14 → 14 digits, indicator skipped), GLN (13) or SSCC (18, extension skipped).

    A 13-digit code is read as a GLN; a GTIN-13 gives the same prefix.
    """
    length = _check_prefix_length(prefix_length)
    _require_digits("Code", code)
    if len(code) == 18:
        return validate_sscc(code)[1 : 1 + length]
    if len(code) == 13:
        return validate_gln(code)[:length]
    if len(code) in (8, 12, 14):
        return normalise_gtin(code)[1 : 1 + length]
    raise GS1Error(
        f"Code {code} has {len(code)} digits — give a GTIN (8, 12, 13 or 14 digits), a GLN (13) or an SSCC (18)."
    )


def _urn_escape(value: str) -> str:
    return "".join(_URN_ESCAPES.get(char, char) for char in value)


def _urn_unescape(label: str, urn: str, text: str) -> str:
    for char in SERIAL_UNSAFE_CHARS.replace("%", ""):
        if char in text:
            raise GS1Error(f"{label} in {urn!r} contains a bare {char!r} — write it escaped as {_URN_ESCAPES[char]}.")
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise GS1Error(f"{label} in {urn!r} has a '%' not followed by two hex digits — write a literal '%' as %25.")
    return _PERCENT_HEX.sub(lambda m: chr(int(m.group(1), 16)), text)


def _split_urn(urn: object, scheme: str, example: str, fields: int) -> list[str]:
    if not isinstance(urn, str) or not urn.lower().startswith(scheme):
        raise GS1Error(f"{urn!r} is not an {scheme}… URN — give it in the form {example}.")
    # maxsplit: '.' is a legal unescaped character of the last field (serial, lot, extension).
    parts = urn[len(scheme) :].split(".", fields - 1)
    if len(parts) != fields:
        raise GS1Error(f"URN {urn!r} has {len(parts)} dot-separated fields — expected {fields}, as in {example}.")
    return parts


def _parse_gtin_fields(urn: str, prefix: str, item: str) -> tuple[str, int]:
    if not (prefix.isdigit() and item.isdigit() and prefix.isascii() and item.isascii()):
        raise GS1Error(f"URN {urn!r}: company prefix and item reference must be digits — correct the URN.")
    length = _check_prefix_length(len(prefix))
    if length + len(item) != 13:
        raise GS1Error(
            f"URN {urn!r}: company prefix ({length} digits) and indicator + item reference ({len(item)} digits) "
            "must total 13 digits — correct the URN."
        )
    body = item[0] + prefix + item[1:]
    return body + check_digit(body), length


def _gtin_fields(gtin: str, prefix_length: int) -> tuple[str, str]:
    length = _check_prefix_length(prefix_length)
    code = normalise_gtin(gtin)
    return code[1 : 1 + length], code[0] + code[1 + length : 13]


def sgtin_urn(gtin: str, serial: str, prefix_length: int) -> str:
    """EPC pure-identity URN of a serialised unit: ``urn:epc:id:sgtin:{prefix}.{indicator}{itemref}.{serial}``."""
    prefix, item = _gtin_fields(gtin, prefix_length)
    return f"urn:epc:id:sgtin:{prefix}.{item}.{_urn_escape(validate_serial(serial))}"


def parse_sgtin_urn(urn: str) -> tuple[str, str, int]:
    """Parse an SGTIN URN into ``(gtin14, serial, prefix_length)``."""
    prefix, item, serial = _split_urn(urn, "urn:epc:id:sgtin:", "urn:epc:id:sgtin:0614141.812345.6789", 3)
    gtin, length = _parse_gtin_fields(urn, prefix, item)
    return gtin, validate_serial(_urn_unescape("Serial", urn, serial)), length


def lgtin_urn(gtin: str, lot: str, prefix_length: int) -> str:
    """EPC class URN of a GTIN + lot: ``urn:epc:class:lgtin:{prefix}.{indicator}{itemref}.{lot}``."""
    prefix, item = _gtin_fields(gtin, prefix_length)
    return f"urn:epc:class:lgtin:{prefix}.{item}.{_urn_escape(validate_lot(lot))}"


def parse_lgtin_urn(urn: str) -> tuple[str, str, int]:
    """Parse an LGTIN URN into ``(gtin14, lot, prefix_length)``."""
    prefix, item, lot = _split_urn(urn, "urn:epc:class:lgtin:", "urn:epc:class:lgtin:0614141.812345.LOT1", 3)
    gtin, length = _parse_gtin_fields(urn, prefix, item)
    return gtin, validate_lot(_urn_unescape("Lot", urn, lot)), length


def sscc_urn(sscc: str, prefix_length: int) -> str:
    """EPC URN of an SSCC: ``urn:epc:id:sscc:{prefix}.{extension}{serialref}`` (check digit dropped)."""
    length = _check_prefix_length(prefix_length)
    code = validate_sscc(sscc)
    return f"urn:epc:id:sscc:{code[1 : 1 + length]}.{code[0]}{code[1 + length : 17]}"


def parse_sscc_urn(urn: str) -> tuple[str, int]:
    """Parse an SSCC URN into ``(sscc18, prefix_length)``."""
    prefix, serial_ref = _split_urn(urn, "urn:epc:id:sscc:", "urn:epc:id:sscc:0614141.1234567890", 2)
    if not (prefix.isdigit() and serial_ref.isdigit() and prefix.isascii() and serial_ref.isascii()):
        raise GS1Error(f"URN {urn!r}: company prefix and serial reference must be digits — correct the URN.")
    length = _check_prefix_length(len(prefix))
    if length + len(serial_ref) != 17:
        raise GS1Error(
            f"URN {urn!r}: company prefix ({length} digits) and extension + serial reference ({len(serial_ref)} "
            "digits) must total 17 digits — correct the URN."
        )
    body = serial_ref[0] + prefix + serial_ref[1:]
    return body + check_digit(body), length


def sgln_urn(gln: str, prefix_length: int, extension: str = "0") -> str:
    """EPC URN of a location: ``urn:epc:id:sgln:{prefix}.{locref}.{extension}``; extension ``0`` means none."""
    length = _check_prefix_length(prefix_length)
    code = validate_gln(gln)
    ext = _validate_text_82("GLN extension", extension, 1, 20)
    return f"urn:epc:id:sgln:{code[:length]}.{code[length:12]}.{_urn_escape(ext)}"


def parse_sgln_urn(urn: str) -> tuple[str, str, int]:
    """Parse an SGLN URN into ``(gln13, extension, prefix_length)``."""
    prefix, location, ext = _split_urn(urn, "urn:epc:id:sgln:", "urn:epc:id:sgln:0614141.12345.0", 3)
    # With a 12-digit prefix the location reference is legitimately empty.
    if not (prefix.isdigit() and prefix.isascii() and (location == "" or (location.isdigit() and location.isascii()))):
        raise GS1Error(f"URN {urn!r}: company prefix and location reference must be digits — correct the URN.")
    length = _check_prefix_length(len(prefix))
    if length + len(location) != 12:
        raise GS1Error(
            f"URN {urn!r}: company prefix ({length} digits) and location reference ({len(location)} digits) "
            "must total 12 digits — correct the URN."
        )
    body = prefix + location
    extension = _validate_text_82("GLN extension", _urn_unescape("Extension", urn, ext), 1, 20)
    return body + check_digit(body), extension, length
