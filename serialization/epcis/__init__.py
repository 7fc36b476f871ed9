"""EPCIS documents out of what the packaging lines reported.

- ``events``: LineReport/PackEvent rows → EPCIS event records, read with one streaming query (never a whole batch in
  memory);
- ``writer``: those records → an EPCIS 2.0 JSON-LD, 2.0 XML or 1.2 XML document, written as the rows arrive
  (``write_epcis_document``, ``EpcisScope``);
- ``validation``: a document → the problems the official JSON schema / XSDs and the CBV lists find in it
  (``validate_epcis_document``).

The background jobs, downloads and their access log are ``serialization.services.epcis_exports``. This module holds
only what all of them share and imports nothing of Django's models.
"""

from audit.exceptions import DomainError

# (version, syntax) pairs the standards define: EPCIS 1.2 has no JSON binding.
FORMATS = (("2.0", "json"), ("2.0", "xml"), ("1.2", "xml"))


class EpcisError(DomainError):
    code = "epcis"


def check_format(*, version: str, syntax: str) -> None:
    """Refuse a version/syntax pair the standards do not define, naming the field to change."""
    versions = sorted({v for v, _ in FORMATS})
    if version not in versions:
        raise EpcisError(f"Unknown EPCIS version {version!r}; use one of {', '.join(versions)}.", field="version")
    syntaxes = [s for v, s in FORMATS if v == version]
    if syntax not in syntaxes:
        if version == "1.2" and syntax == "json":
            raise EpcisError(
                'EPCIS 1.2 has no JSON binding: ask for syntax "xml", or for version "2.0" to get JSON-LD.',
                field="syntax",
            )
        raise EpcisError(
            f"Unknown syntax {syntax!r} for EPCIS {version}; use one of {', '.join(syntaxes)}.", field="syntax"
        )
