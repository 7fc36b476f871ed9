"""Tests for masterdata.gs1: DOMAIN.md test vectors, exact error texts, round-trip properties, and biip cross-checks."""

from __future__ import annotations

import datetime as dt
import string

import biip
import pytest
from biip.gs1_messages import GS1Message
from hypothesis import given
from hypothesis import strategies as st

from masterdata.gs1 import (
    CHARSET_82,
    SERIAL_UNSAFE_CHARS,
    GS1Error,
    _raw_element_string,
    build_digital_link,
    build_element_string,
    check_digit,
    company_prefix_of,
    gtin_from_ndc,
    is_valid_check_digit,
    lgtin_urn,
    normalise_gtin,
    ntin_from_pzn,
    parse_digital_link,
    parse_element_string,
    parse_lgtin_urn,
    parse_sgln_urn,
    parse_sgtin_urn,
    parse_sscc_urn,
    ppn_from_pzn,
    sgln_urn,
    sgtin_urn,
    sscc_from_parts,
    sscc_urn,
    validate_ai_value,
    validate_gln,
    validate_lot,
    validate_ppn,
    validate_serial,
    validate_sscc,
)

VALID_GTINS = ["96385074", "036000291452", "4006381333931", "09521234543213", "80614141123458"]

# ---------------------------------------------------------------------------------------------------------------------
# Character set and check digits
# ---------------------------------------------------------------------------------------------------------------------


def test_charset_82_has_82_characters_including_every_serial_unsafe_one():
    assert len(CHARSET_82) == 82
    assert set(SERIAL_UNSAFE_CHARS) <= CHARSET_82
    assert set(string.ascii_letters + string.digits) <= CHARSET_82
    assert not {" ", "#", "$", "@", "[", "\\", "]", "^", "`", "{", "|", "}", "~", "é"} & CHARSET_82


@pytest.mark.parametrize("gtin", VALID_GTINS)
def test_domain_vector_gtin_is_valid_and_normalises_to_14_digits(gtin):
    assert is_valid_check_digit(gtin)
    assert normalise_gtin(gtin) == gtin.zfill(14)
    assert check_digit(gtin[:-1]) == gtin[-1]


@pytest.mark.parametrize(
    ("gtin", "position"), [(gtin, position) for gtin in VALID_GTINS for position in range(len(gtin))]
)
def test_changing_any_single_digit_of_a_valid_gtin_makes_it_invalid(gtin, position):
    for digit in "0123456789":
        if digit == gtin[position]:
            continue
        changed = gtin[:position] + digit + gtin[position + 1 :]
        assert not is_valid_check_digit(changed), changed
        with pytest.raises(GS1Error):
            normalise_gtin(changed)


@pytest.mark.parametrize("code", ["", "1", "0952123454321A", "0952-123454321", None, 9521234543213])
def test_is_valid_check_digit_is_false_for_non_codes(code):
    assert is_valid_check_digit(code) is False


def test_wrong_gtin_check_digit_message_names_the_expected_digit():
    with pytest.raises(GS1Error) as err:
        normalise_gtin("09521234543214")
    assert str(err.value) == "GTIN 09521234543214 has check digit 4; expected 3 — correct the last digit."


def test_gtin_of_wrong_length_is_rejected_with_the_allowed_lengths():
    with pytest.raises(GS1Error) as err:
        normalise_gtin("95212345432")
    assert str(err.value) == (
        "GTIN 95212345432 has 11 digits — a GTIN has 8, 12, 13 or 14 digits; check for missing or extra digits."
    )


def test_gtin_with_a_non_digit_names_the_character_and_position():
    with pytest.raises(GS1Error) as err:
        normalise_gtin("0952123454321A")
    assert str(err.value) == (
        "GTIN '0952123454321A' has 'A' at position 14 — use digits only (remove spaces, dashes and letters)."
    )


def test_gln_and_sscc_are_validated_with_their_check_digit():
    assert validate_gln("0614141123452") == "0614141123452"
    assert validate_sscc("106141411234567897") == "106141411234567897"
    with pytest.raises(GS1Error) as err:
        validate_sscc("106141411234567890")
    assert str(err.value) == "SSCC 106141411234567890 has check digit 0; expected 7 — correct the last digit."
    with pytest.raises(GS1Error) as err:
        validate_gln("061414112345")
    assert str(err.value) == (
        "GLN 061414112345 has 12 digits — it must have exactly 13; check for missing or extra digits."
    )


# ---------------------------------------------------------------------------------------------------------------------
# SSCC, PZN/NTIN/PPN, NDC
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "prefix", "serial_ref", "sscc"),
    [
        (1, "0614141", 123456789, "106141411234567897"),
        ("1", "234567", "8901234567", "123456789012345675"),
        ("1", "0614141", 234567890, "106141412345678908"),
        (0, "061414112345", 7, "006141411234500071"),  # check digit confirmed with biip
    ],
)
def test_sscc_from_parts_pads_the_serial_reference_and_adds_the_check_digit(ext, prefix, serial_ref, sscc):
    assert sscc_from_parts(ext, prefix, serial_ref) == sscc
    assert validate_sscc(sscc) == sscc
    assert biip.parse(sscc).sscc is not None


def test_sscc_from_parts_rejects_a_serial_reference_that_does_not_fit():
    with pytest.raises(GS1Error) as err:
        sscc_from_parts(1, "0614141", 1_000_000_000)
    assert str(err.value) == (
        "SSCC serial reference 1000000000 does not fit: company prefix 0614141 (7 digits) leaves 9 digits — "
        "use a serial reference from 0 to 999999999."
    )


@pytest.mark.parametrize("ext", [10, "12", "x", -1, True])
def test_sscc_from_parts_rejects_a_bad_extension_digit(ext):
    with pytest.raises(GS1Error, match="use a single digit 0 to 9"):
        sscc_from_parts(ext, "0614141", 1)


def test_domain_vector_pzn_gives_ntin_and_ppn():
    assert ntin_from_pzn("03752864") == "04150037528643"
    assert ppn_from_pzn("03752864") == "110375286414"
    assert validate_ppn("110375286414") == "110375286414"
    assert normalise_gtin("04150037528643") == "04150037528643"


def test_pzn_with_wrong_check_digit_names_the_expected_one():
    with pytest.raises(GS1Error) as err:
        ntin_from_pzn("03752865")
    assert str(err.value) == "PZN 03752865 has check digit 5; expected 4 — correct the last digit."


def test_pzn_whose_check_remainder_is_10_is_rejected():
    body = "0000003"  # 3 × 7 = 21 ≡ 10 (mod 11): no check digit exists, IFA never issues such a PZN
    with pytest.raises(GS1Error, match="remainder 10"):
        ppn_from_pzn(body + "0")


def test_seven_digit_pzn_is_rejected_with_the_padding_hint():
    with pytest.raises(GS1Error) as err:
        ntin_from_pzn("3752864")
    assert (
        str(err.value) == "PZN 3752864 has 7 digits — a PZN8 has exactly 8 digits (prefix an old 7-digit PZN with 0)."
    )


def test_ppn_with_wrong_check_digits_names_the_expected_ones():
    with pytest.raises(GS1Error) as err:
        validate_ppn("110375286415")
    assert str(err.value) == "PPN 110375286415 has check digits 15; expected 14 — correct the last two digits."


def test_ppn_with_lower_case_letters_is_rejected():
    with pytest.raises(GS1Error, match="only digits and upper-case letters"):
        validate_ppn("11abc14")


@pytest.mark.parametrize("ndc", ["1234567890", "1234-5678-90", "12345-678-90", "12345-6789-0"])
def test_domain_vector_ndc_gives_gtin_14(ndc):
    assert gtin_from_ndc(ndc) == "00312345678906"


def test_eleven_digit_ndc_is_rejected_with_a_hint():
    with pytest.raises(GS1Error, match="11-digit NDC is the billing format"):
        gtin_from_ndc("12345678901")


def test_ndc_with_a_wrong_segment_layout_is_rejected():
    with pytest.raises(GS1Error, match="4-4-2, 5-3-2 or 5-4-1"):
        gtin_from_ndc("123-45678-90")


# ---------------------------------------------------------------------------------------------------------------------
# AI values
# ---------------------------------------------------------------------------------------------------------------------


def test_expiry_with_day_00_is_accepted_and_kept_as_given():
    assert validate_ai_value("17", "260200") == "260200"
    assert parse_element_string("(01)09521234543213(17)260200") == {"01": "09521234543213", "17": "260200"}


def test_production_date_with_day_00_is_accepted_as_the_syntax_dictionary_says():
    # gs1-syntax-dictionary.txt: "11  *?  N6,yymmd0" — the same day-00 rule as AI 17.
    assert validate_ai_value("11", "260100") == "260100"


@pytest.mark.parametrize(
    ("ai", "value", "message"),
    [
        (
            "11",
            "260230",
            "AI (11) production date 260230 has day 30, which does not exist in month 02 — use a day from "
            "00 (end of month) or 01 to 28.",
        ),
        (
            "17",
            "261301",
            "AI (17) expiry date 261301 has month 13 — use YYMMDD with a month from 01 to 12.",
        ),
        (
            "17",
            "2612",
            "AI (17) expiry date 2612 has 4 digits — AI (17) takes exactly 6 digits.",
        ),
        (
            "01",
            "9521234543213",
            "AI (01) GTIN 9521234543213 has 13 digits — AI (01) takes exactly 14 digits; "
            "pad a shorter GTIN with leading zeros.",
        ),
        (
            "01",
            "09521234543214",
            "AI (01) GTIN 09521234543214 has check digit 4; expected 3 — correct the last digit.",
        ),
        ("91", "ABC", "AI (91) crypto key 'ABC' has 3 characters — it must have exactly 4."),
        (
            "400",
            "PO1",
            "AI (400) is not supported here — use one of 00, 01, 10, 11, 17, 21, 22, 710, 711, 712, 713, 714, 715, "
            "91, 92.",
        ),
    ],
)
def test_invalid_ai_values_are_rejected_with_a_message_naming_the_ai(ai, value, message):
    with pytest.raises(GS1Error) as err:
        validate_ai_value(ai, value)
    assert str(err.value) == message


def test_leap_day_is_valid_only_in_leap_years():
    assert validate_ai_value("17", "280229") == "280229"
    with pytest.raises(GS1Error, match="day 29"):
        validate_ai_value("17", "270229")


@pytest.mark.parametrize(
    ("serial", "char", "position"),
    [("AB é1", "' ' (U+0020)", 3), ("ABé1", "'é' (U+00E9)", 3), ("#1", "'#' (U+0023)", 1)],
)
def test_serial_with_a_character_outside_set_82_names_the_character_and_position(serial, char, position):
    with pytest.raises(GS1Error) as err:
        validate_serial(serial)
    assert str(err.value) == (
        f"AI (21) serial {serial!r} has {char} at position {position}, which is not in GS1 character set 82 — "
        "use only A–Z, a–z, 0–9 and !\"%&'()*+,-./:;<=>?_."
    )


def test_serial_and_lot_lengths_are_1_to_20():
    assert validate_serial("A" * 20) == "A" * 20
    assert validate_lot("L") == "L"
    with pytest.raises(GS1Error) as err:
        validate_lot("L" * 21)
    assert str(err.value) == f"AI (10) lot {'L' * 21!r} has 21 characters — it must have 1 to 20."
    with pytest.raises(GS1Error, match="is empty"):
        validate_serial("")


# ---------------------------------------------------------------------------------------------------------------------
# Element strings
# ---------------------------------------------------------------------------------------------------------------------

DOMAIN_AIS = {"01": "09521234543213", "17": "261231", "10": "ABC123", "21": "12345"}
DOMAIN_ELEMENT_STRING = "(01)09521234543213(17)261231(10)ABC123(21)12345"


def test_domain_vector_element_string_is_built_with_fixed_length_ais_first():
    shuffled = {"21": "12345", "10": "ABC123", "17": "261231", "01": "09521234543213"}
    assert build_element_string(shuffled) == DOMAIN_ELEMENT_STRING


@pytest.mark.parametrize(
    "text",
    [
        DOMAIN_ELEMENT_STRING,
        "(01) 09521234543213 (17) 261231 (10) ABC123 (21) 12345",
        "010952123454321317261231" + "10ABC123\x1d2112345",
        "]d2010952123454321317261231" + "10ABC123\x1d2112345",
        "]C1\x1d010952123454321317261231" + "10ABC123\x1d2112345\x1d",
        "]Q3010952123454321317261231" + "10ABC123\x1d2112345",
    ],
)
def test_element_string_is_parsed_from_bracketed_and_raw_forms(text):
    assert parse_element_string(text) == DOMAIN_AIS


def test_parsed_element_string_keeps_the_order_of_appearance():
    parsed = parse_element_string("]d22112345\x1d0109521234543213" + "10ABC123\x1d17261231")
    assert list(parsed) == ["21", "01", "10", "17"]


def test_parenthesis_inside_a_value_is_escaped_in_the_bracketed_form():
    ais = {"01": "09521234543213", "10": "A(21)B", "21": "(x)"}
    text = build_element_string(ais)
    assert text == "(01)09521234543213(10)A\\(21)B(21)\\(x)"
    assert parse_element_string(text) == ais


def test_raw_element_string_without_a_gs_separator_is_rejected():
    with pytest.raises(GS1Error, match="without a GS separator"):
        parse_element_string("0109521234543213" + "10ABC123456789012345672112345")


def test_element_string_with_conflicting_duplicate_ai_is_rejected():
    with pytest.raises(GS1Error, match="appears twice"):
        parse_element_string("(01)09521234543213(21)1(21)2")


def test_non_gs1_symbology_identifier_is_rejected():
    with pytest.raises(GS1Error, match="does not announce GS1 data"):
        parse_element_string("]d10109521234543213")


# ---------------------------------------------------------------------------------------------------------------------
# Digital Link and EPC URNs: DOMAIN.md vectors
# ---------------------------------------------------------------------------------------------------------------------


def test_domain_vector_digital_link_puts_path_qualifiers_in_order_and_others_in_the_query():
    ais = {"17": "261231", "21": "12345", "10": "ABC/1", "01": "09521234543213"}
    uri = "https://id.gs1.org/01/09521234543213/10/ABC%2F1/21/12345?17=261231"
    assert build_digital_link(ais) == uri
    assert parse_digital_link(uri) == ais


def test_digital_link_is_parsed_on_any_host_with_a_path_prefix_and_extra_parameters():
    uri = "https://brand.example.com/dl/01/09521234543213/10/ABC%2F1/21/12345?17=261231&linkType=gs1:pip"
    assert parse_digital_link(uri) == {"01": "09521234543213", "10": "ABC/1", "21": "12345", "17": "261231"}


def test_digital_link_with_a_short_gtin_is_normalised_to_14_digits():
    assert parse_digital_link("https://id.gs1.org/01/9521234543213") == {"01": "09521234543213"}


def test_digital_link_with_qualifiers_out_of_order_is_rejected():
    with pytest.raises(GS1Error, match="in that order"):
        parse_digital_link("https://id.gs1.org/01/09521234543213/21/1/10/A")


def test_digital_link_without_a_primary_key_is_rejected():
    with pytest.raises(GS1Error) as err:
        build_digital_link({"10": "A"})
    assert str(err.value) == "A Digital Link needs a primary key — add AI (01) GTIN or AI (00) SSCC."


@pytest.mark.parametrize(
    ("urn", "gtin", "serial", "prefix_length"),
    [
        ("urn:epc:id:sgtin:0614141.812345.6789", "80614141123458", "6789", 7),
        ("urn:epc:id:sgtin:0614141.107346.2017", "10614141073464", "2017", 7),
        ("urn:epc:id:sgtin:2345678901.123.9999", "12345678901231", "9999", 10),
        ("urn:epc:id:sgtin:0614141.812345.AB%2F12%25x", "80614141123458", "AB/12%x", 7),
    ],
)
def test_domain_vector_sgtin_urn(urn, gtin, serial, prefix_length):
    assert parse_sgtin_urn(urn) == (gtin, serial, prefix_length)
    assert sgtin_urn(gtin, serial, prefix_length) == urn


def test_domain_vector_sgtin_urn_gives_the_digital_link():
    gtin, serial, _ = parse_sgtin_urn("urn:epc:id:sgtin:2345678901.123.9999")
    assert build_digital_link({"01": gtin, "21": serial}) == "https://id.gs1.org/01/12345678901231/21/9999"


def test_domain_vector_sscc_gives_urn_and_digital_link():
    assert sscc_urn("106141411234567897", 7) == "urn:epc:id:sscc:0614141.1123456789"
    assert build_digital_link({"00": "106141411234567897"}) == "https://id.gs1.org/00/106141411234567897"
    assert parse_digital_link("https://id.gs1.org/00/106141411234567897") == {"00": "106141411234567897"}
    assert parse_sscc_urn("urn:epc:id:sscc:0614141.1123456789") == ("106141411234567897", 7)


@pytest.mark.parametrize(
    ("urn", "sscc", "prefix_length"),
    [
        ("urn:epc:id:sscc:234567.18901234567", "123456789012345675", 6),
        ("urn:epc:id:sscc:0614141.1234567890", "106141412345678908", 7),
    ],
)
def test_domain_vector_sscc_urn(urn, sscc, prefix_length):
    assert parse_sscc_urn(urn) == (sscc, prefix_length)
    assert sscc_urn(sscc, prefix_length) == urn


def test_sgtin_urn_escapes_exactly_the_unsafe_characters():
    urn = sgtin_urn("80614141123458", "\"%&/<>?!'()*+,-.:;=_", 7)
    assert urn == "urn:epc:id:sgtin:0614141.812345.%22%25%26%2F%3C%3E%3F!'()*+,-.:;=_"
    assert parse_sgtin_urn(urn)[1] == "\"%&/<>?!'()*+,-.:;=_"


def test_sgtin_urn_with_a_bare_unsafe_character_is_rejected():
    with pytest.raises(GS1Error, match="bare '/'"):
        parse_sgtin_urn("urn:epc:id:sgtin:0614141.812345.A/B")


def test_lgtin_urn_round_trips_the_lot():
    urn = lgtin_urn("80614141123458", "LOT/1", 7)
    assert urn == "urn:epc:class:lgtin:0614141.812345.LOT%2F1"
    assert parse_lgtin_urn(urn) == ("80614141123458", "LOT/1", 7)


@pytest.mark.parametrize(
    ("gln", "prefix_length", "extension", "urn"),
    [
        ("0614141123452", 7, "0", "urn:epc:id:sgln:0614141.12345.0"),
        ("0614141123452", 7, "A/1", "urn:epc:id:sgln:0614141.12345.A%2F1"),
        ("0614141123452", 12, "0", "urn:epc:id:sgln:061414112345..0"),
    ],
)
def test_sgln_urn_round_trips(gln, prefix_length, extension, urn):
    assert sgln_urn(gln, prefix_length, extension) == urn
    assert parse_sgln_urn(urn) == (gln, extension, prefix_length)


@pytest.mark.parametrize(
    ("code", "prefix_length", "prefix"),
    [
        ("80614141123458", 7, "0614141"),
        ("0614141123452", 7, "0614141"),
        ("106141411234567897", 7, "0614141"),
        ("036000291452", 7, "0036000"),
    ],
)
def test_company_prefix_skips_indicator_and_extension_digit(code, prefix_length, prefix):
    assert company_prefix_of(code, prefix_length) == prefix


@pytest.mark.parametrize("prefix_length", [5, 13, 0, "7", True])
def test_prefix_length_outside_6_to_12_is_rejected_naming_the_range(prefix_length):
    with pytest.raises(GS1Error) as err:
        sgtin_urn("80614141123458", "1", prefix_length)
    assert str(err.value) == (
        f"Company prefix length {prefix_length!r} is invalid — use a whole number from 6 to 12, "
        "as recorded for the company (it cannot be derived from the code)."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------------------

SET_82 = "".join(sorted(CHARSET_82))
text_82 = st.text(alphabet=SET_82, min_size=1, max_size=20)
# Make sure the characters that need escaping (URN, DL, bracketed form) turn up often.
tricky_82 = st.text(alphabet=SERIAL_UNSAFE_CHARS + "()!'*+,.:;=_Aa0", min_size=1, max_size=20)
serials = st.one_of(text_82, tricky_82)


@st.composite
def gtins(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet=string.digits, min_size=13, max_size=13))
    return body + check_digit(body)


yymmdd = st.dates(dt.date(2000, 1, 1), dt.date(2075, 12, 31)).map(lambda d: d.strftime("%y%m%d"))
expiry = st.one_of(yymmdd, yymmdd.map(lambda v: v[:4] + "00"))


@st.composite
def ai_dicts(draw: st.DrawFn) -> dict[str, str]:
    ais = {"01": draw(gtins())}
    optional = {
        "17": expiry,
        "11": yymmdd,
        "10": serials,
        "21": serials,
        "22": text_82,
        "710": text_82,
        "714": text_82,
        "91": st.text(alphabet=SET_82, min_size=4, max_size=4),
        "92": st.text(alphabet=SET_82, min_size=44, max_size=44),
    }
    for ai in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        ais[ai] = draw(optional[ai])
    return ais


@given(ai_dicts())
def test_property_element_string_round_trips_in_bracketed_and_raw_form(ais):
    assert parse_element_string(build_element_string(ais)) == ais
    assert parse_element_string("]d2" + _raw_element_string(ais)) == ais


@given(ai_dicts())
def test_property_digital_link_round_trips(ais):
    assert parse_digital_link(build_digital_link(ais)) == ais
    assert parse_digital_link(build_digital_link(ais, base="https://brand.example/p/")) == ais


@given(gtins(), serials, st.integers(6, 12))
def test_property_sgtin_urn_round_trips(gtin, serial, prefix_length):
    assert parse_sgtin_urn(sgtin_urn(gtin, serial, prefix_length)) == (gtin, serial, prefix_length)


@given(gtins(), serials, st.integers(6, 12))
def test_property_lgtin_urn_round_trips(gtin, lot, prefix_length):
    assert parse_lgtin_urn(lgtin_urn(gtin, lot, prefix_length)) == (gtin, lot, prefix_length)


@given(
    st.integers(0, 9), st.integers(6, 12).flatmap(lambda n: st.text(string.digits, min_size=n, max_size=n)), st.data()
)
def test_property_sscc_urn_round_trips(ext, prefix, data):
    serial_ref = data.draw(st.integers(0, 10 ** (16 - len(prefix)) - 1))
    sscc = sscc_from_parts(ext, prefix, serial_ref)
    assert parse_sscc_urn(sscc_urn(sscc, len(prefix))) == (sscc, len(prefix))
    assert company_prefix_of(sscc, len(prefix)) == prefix


@given(gtins(), serials, st.integers(6, 12))
def test_property_element_string_digital_link_and_urn_agree_on_gtin_and_serial(gtin, serial, prefix_length):
    ais = {"01": gtin, "21": serial}
    from_es = parse_element_string(build_element_string(ais))
    from_dl = parse_digital_link(build_digital_link(ais))
    urn = sgtin_urn(from_dl["01"], from_dl["21"], prefix_length)
    assert (from_es["01"], from_es["21"]) == (from_dl["01"], from_dl["21"]) == parse_sgtin_urn(urn)[:2]


# ---------------------------------------------------------------------------------------------------------------------
# Independent check with biip
# ---------------------------------------------------------------------------------------------------------------------


def _biip_values(element_strings) -> dict[str, str]:
    return {es.ai.ai: es.value for es in element_strings}


def _assert_biip_agrees(expected: dict[str, str], seen: dict[str, str]) -> None:
    for ai in ("01", "21", "10", "17"):
        assert seen.get(ai) == expected.get(ai), ai


def test_biip_reads_the_domain_vector_like_we_do():
    raw = _raw_element_string(DOMAIN_AIS)
    _assert_biip_agrees(DOMAIN_AIS, _biip_values(biip.parse("]d2" + raw).gs1_message.element_strings))
    _assert_biip_agrees(
        DOMAIN_AIS, _biip_values(GS1Message.parse_hri(build_element_string(DOMAIN_AIS)).element_strings)
    )
    dl = biip.parse(build_digital_link(DOMAIN_AIS)).gs1_digital_link_uri
    _assert_biip_agrees(DOMAIN_AIS, _biip_values(dl.element_strings))


def test_biip_reads_expiry_day_00_as_end_of_month():
    message = biip.parse(_raw_element_string({"01": "09521234543213", "17": "280200"})).gs1_message
    assert message.element_strings.get(ai="17").date == dt.date(2028, 2, 29)


@given(ai_dicts())
def test_property_biip_parses_what_we_build_to_the_same_gtin_serial_lot_and_expiry(ais):
    raw = biip.parse("]d2" + _raw_element_string(ais))
    assert raw.gs1_message_error is None
    _assert_biip_agrees(ais, _biip_values(raw.gs1_message.element_strings))
    if not any("(" in value for value in ais.values()):  # biip's HRI parser has no '\(' escape
        _assert_biip_agrees(ais, _biip_values(GS1Message.parse_hri(build_element_string(ais)).element_strings))
    link = biip.parse(build_digital_link(ais))
    assert link.gs1_digital_link_uri_error is None
    _assert_biip_agrees(ais, _biip_values(link.gs1_digital_link_uri.element_strings))
